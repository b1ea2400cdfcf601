"""The machine image: looked up once by owner and name pattern (AMI ids differ per region and age), then recorded.

The inventory records the AMI each role was first given; hosts launched later
(a replacement, another worker) get the recorded one, so the fleet never
mixes images because Canonical or Debian published a newer one meanwhile.
"""
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


def recorded_image(ec2, image_id: str, role: str) -> dict:
    """The image the inventory recorded for role, as EC2 describes it; one line if it is gone."""
    with aws_call(f"describing the recorded AMI {image_id}"):
        images = ec2.describe_images(ImageIds=[image_id])["Images"]
    if not images:
        raise DeployError(f"the {role} AMI recorded in the inventory ({image_id}) no longer exists here; remove "
                          f"amis.{role} from the inventory to look up the newest one (its hosts will differ)")
    return images[0]
