"""boto3 wrappers: one small module per EC2 resource, each taking the client it uses."""
