"""The machine image: looked up by owner and name pattern, never hard-coded (AMI ids differ per region and age)."""
from __future__ import annotations

from inferq.deploy.errors import DeployError, aws_call


def latest_image(ec2, owner: str, name_pattern: str, architecture: str = "x86_64") -> dict:
    """The newest available image of owner whose name matches name_pattern."""
    with aws_call(f"looking up the AMI {name_pattern!r}"):
        images = ec2.describe_images(Owners=[owner], Filters=[
            {"Name": "name", "Values": [name_pattern]},
            {"Name": "architecture", "Values": [architecture]},
            {"Name": "state", "Values": ["available"]},
        ])["Images"]
    if not images:
        raise DeployError(f"no {architecture} AMI of owner {owner} matches {name_pattern!r} in this region; "
                          "pass --ami-name/--ami-owner")
    return max(images, key=lambda image: image.get("CreationDate", ""))
