"""EC2 instances: found by their name tag, created one per name, waited for with boto3 waiters.

Every instance requires IMDSv2 (session tokens, one hop) and boots from an
encrypted root volume; its user data holds no secret: the host makes its own SSH
host key at first boot and prints it to its console (deploy.host_keys). A
burstable (T) instance is launched with standard CPU credits (no surplus
billed), the orchestrator with termination protection, and every launch with a
ClientToken, so a retried RunInstances never makes a second instance.
"""
from __future__ import annotations

import base64

from inferq.deploy.aws.tags import cluster_filter, tag_spec
from inferq.deploy.defaults import IMDS_HOP_LIMIT, WAIT_SECONDS
from inferq.deploy.errors import aws_call
from inferq.deploy.retry import eventually

LIVE_STATES = ["pending", "running", "stopping", "stopped"]
"""States of an instance that still exists (terminated ones linger in describe for an hour)."""

METADATA_OPTIONS = {"HttpTokens": "required", "HttpEndpoint": "enabled", "HttpPutResponseHopLimit": IMDS_HOP_LIMIT}
"""IMDSv2 only: a request without a session token (an SSRF's plain GET) gets nothing."""


def find(ec2, cluster: str) -> list[dict]:
    """The cluster's instances that are not terminated (or terminating)."""
    filters = cluster_filter(cluster) + [{"Name": "instance-state-name", "Values": LIVE_STATES}]
    with aws_call("describing instances"):
        pages = ec2.get_paginator("describe_instances").paginate(Filters=filters)
        return [i for page in pages for r in page["Reservations"] for i in r["Instances"]]


def burstable(instance_type: str) -> bool:
    """Whether an instance type earns CPU credits (t2, t3, t3a, t4g ...): its credit option must be set."""
    return instance_type.startswith("t") and instance_type[1:2].isdigit()


def launch_request(cluster: str, role: str, name: str, image: dict, instance_type: str, volume_gb: int,
                   user_data: str = "", key_name: str = "", group_id: str = "", client_token: str = "") -> dict:
    """RunInstances' arguments for one tagged instance (the pre-flight dry-runs the same request)."""
    request = dict(
        ImageId=image["ImageId"], InstanceType=instance_type, MinCount=1, MaxCount=1,
        MetadataOptions=METADATA_OPTIONS,
        BlockDeviceMappings=[{"DeviceName": image.get("RootDeviceName", "/dev/sda1"),
                              "Ebs": {"VolumeSize": volume_gb, "VolumeType": "gp3", "Encrypted": True,
                                      "DeleteOnTermination": True}}],
        TagSpecifications=(tag_spec("instance", cluster, role, name) + tag_spec("volume", cluster, role, name)
                           + tag_spec("network-interface", cluster, role, name)),
    )
    if burstable(instance_type):
        # T3 defaults to "unlimited": a busy instance would bill surplus credits. Standard throttles instead.
        request["CreditSpecification"] = {"CpuCredits": "standard"}
    if role == "orchestrator":
        # It holds Redis and every queued job: a stray TerminateInstances must not take it (down lifts this first).
        request["DisableApiTermination"] = True
    if client_token:
        request["ClientToken"] = client_token
    if user_data:
        request["UserData"] = user_data
    if key_name:
        request["KeyName"] = key_name
    if group_id:
        request["SecurityGroupIds"] = [group_id]
    return request


def launch(ec2, request: dict, name: str) -> str:
    """Launch one instance from launch_request(); return its id."""
    what = f"launching instance {name} ({request['InstanceType']})"
    with aws_call(what):
        # The key pair and groups made a moment ago may not be visible to RunInstances yet.
        reply = eventually(what, lambda: ec2.run_instances(**request), "InvalidKeyPair.NotFound",
                           "InvalidGroup.NotFound")
    return reply["Instances"][0]["InstanceId"]


def require_imdsv2(ec2, instance: dict, name: str) -> bool:
    """Require IMDSv2 on an instance launched without it; True if it had to change."""
    if instance.get("MetadataOptions", {}).get("HttpTokens") == "required":
        return False
    with aws_call(f"requiring IMDSv2 on {name}"):
        ec2.modify_instance_metadata_options(InstanceId=instance["InstanceId"], HttpTokens="required",
                                             HttpEndpoint="enabled", HttpPutResponseHopLimit=IMDS_HOP_LIMIT)
    return True


def unencrypted_volumes(ec2, ids: list[str]) -> list[str]:
    """Ids of the volumes attached to these instances that are not encrypted."""
    if not ids:
        return []
    with aws_call("describing volumes"):
        volumes = ec2.describe_volumes(Filters=[{"Name": "attachment.instance-id", "Values": ids}])["Volumes"]
    return [v["VolumeId"] for v in volumes if not v.get("Encrypted")]


def user_data(ec2, instance_id: str) -> str:
    """The user data an instance was launched with ("" if none), through the EC2 API."""
    with aws_call(f"reading the user data of {instance_id}"):
        reply = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
    value = reply.get("UserData", {}).get("Value")
    return base64.b64decode(value).decode() if value else ""


def console_output(ec2, instance_id: str) -> str:
    """What the instance printed to its serial console ("" before anything), through the EC2 API."""
    from botocore.exceptions import ClientError

    with aws_call(f"reading the console output of {instance_id}"):
        try:
            # Latest: the console as it is now (Nitro instances); older types only have it as of the last boot.
            reply = ec2.get_console_output(InstanceId=instance_id, Latest=True)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "UnsupportedOperation":
                raise
            reply = ec2.get_console_output(InstanceId=instance_id)
    return reply.get("Output") or ""  # botocore decodes its base64 already


def protected(ec2, instance_id: str) -> bool:
    """Whether the instance has termination protection."""
    with aws_call(f"reading the termination protection of {instance_id}"):
        reply = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="disableApiTermination")
    return bool(reply.get("DisableApiTermination", {}).get("Value"))


def protect(ec2, instance_id: str, on: bool) -> None:
    """Turn termination protection on (the orchestrator, by up) or off (before down terminates it)."""
    with aws_call(f"{'setting' if on else 'lifting'} the termination protection of {instance_id}"):
        ec2.modify_instance_attribute(InstanceId=instance_id, DisableApiTermination={"Value": on})


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
