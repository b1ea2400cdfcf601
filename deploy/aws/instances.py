"""EC2 instances: found by their name tag, created one per name, waited for with boto3 waiters."""
from __future__ import annotations

from inferq.deploy.aws.tags import cluster_filter, tag_spec
from inferq.deploy.errors import aws_call
from inferq.deploy.settings import WAIT_SECONDS

LIVE_STATES = ["pending", "running", "stopping", "stopped"]
"""States of an instance that still exists (terminated ones linger in describe for an hour)."""


def find(ec2, cluster: str) -> list[dict]:
    """The cluster's instances that are not terminated (or terminating)."""
    filters = cluster_filter(cluster) + [{"Name": "instance-state-name", "Values": LIVE_STATES}]
    with aws_call("describing instances"):
        pages = ec2.get_paginator("describe_instances").paginate(Filters=filters)
        return [i for page in pages for r in page["Reservations"] for i in r["Instances"]]


def launch(ec2, cluster: str, role: str, name: str, image: dict, instance_type: str,
           key_name: str, group_id: str, volume_gb: int) -> str:
    """Launch one tagged instance; return its id."""
    with aws_call(f"launching instance {name} ({instance_type})"):
        reply = ec2.run_instances(
            ImageId=image["ImageId"], InstanceType=instance_type, KeyName=key_name,
            SecurityGroupIds=[group_id], MinCount=1, MaxCount=1,
            BlockDeviceMappings=[{"DeviceName": image.get("RootDeviceName", "/dev/sda1"),
                                  "Ebs": {"VolumeSize": volume_gb, "VolumeType": "gp3",
                                          "DeleteOnTermination": True}}],
            TagSpecifications=tag_spec("instance", cluster, role, name) + tag_spec("volume", cluster, role, name),
        )
    return reply["Instances"][0]["InstanceId"]


def start(ec2, ids: list[str]) -> None:
    """Start stopped instances (a second run brings a stopped cluster back rather than duplicating it)."""
    with aws_call(f"starting instances {', '.join(ids)}"):
        ec2.start_instances(InstanceIds=ids)


def wait(ec2, ids: list[str], state: str, delay: int = 5) -> None:
    """Block until every instance is in state ('running', 'status_ok', 'terminated') with EC2's own waiter."""
    with aws_call(f"waiting for {len(ids)} instance(s) to be {state}"):
        ec2.get_waiter(f"instance_{state}").wait(
            InstanceIds=ids, WaiterConfig={"Delay": delay, "MaxAttempts": max(1, WAIT_SECONDS // delay)})


def describe(ec2, ids: list[str]) -> list[dict]:
    """Fresh descriptions (addresses are known only once an instance runs)."""
    with aws_call("describing instances"):
        reply = ec2.describe_instances(InstanceIds=ids)
    return [i for r in reply["Reservations"] for i in r["Instances"]]


def terminate(ec2, ids: list[str]) -> None:
    """Terminate instances."""
    with aws_call(f"terminating instances {', '.join(ids)}"):
        ec2.terminate_instances(InstanceIds=ids)
