"""Deploying inferq to AWS: boto3 provisioning (``deploy.aws``, ``inferq-provision``) and Fabric configuration (``fab -r deploy``)."""
