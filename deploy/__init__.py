"""Deploying inferq to AWS.

boto3 provisioning (``deploy.aws``, ``inferq-provision``), then Fabric configuration (``fab -r deploy``).
"""
