"""Worker hosts in an EC2 Auto Scaling group: the group and everything it needs, made by `up`, deleted by `down`.

With ``inferq-provision up --min-workers N --max-workers M`` (either one) the worker
hosts are not launched one by one (worker-1..N) but by a group, ``<cluster>-workers``:

- an IAM role and instance profile ``<cluster>-worker`` whose one inline policy lets a
  worker host read this cluster's image objects (S3, under ``images/``) and its worker
  parameters (SSM, ``/inferq/<cluster>/worker/``), put metrics in the ``inferq``
  namespace and complete the lifecycle actions of this group, and nothing else;
- a role and profile ``<cluster>-orchestrator`` for the orchestrator, which publishes the
  backlog (deploy/backlog.py): PutMetricData in the ``inferq`` namespace only;
- a launch template ``<cluster>-workers`` from the same settings as a fixed worker (the
  recorded AMI, the instance type, IMDSv2 required with one hop, an encrypted gp3 root
  volume, the cluster's tags on instance, volume and interface, the key pair and group);
- the group over the default VPC's subnets, instance warm-up 300 s, with a termination
  lifecycle hook ``<cluster>-drain`` that holds a leaving host until it completes the
  action (or the heartbeat timeout passes);
- two target-tracking policies: ``BacklogPerWorker`` (deploy/backlog.py) at the target
  speed x --target-wait-seconds, and the group's average CPU at 70 % (docs/capacity.md
  says why both).

Every name is derived from the cluster, every resource tagged with it, and `down` deletes
what carries the tag (IAM: what carries the tag and the name) after the group is gone.
moto stores all of it; it runs no policy and boots no host (docs/deploy.md).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from inferq.deploy import backlog, defaults
from inferq.deploy.aws.instances import METADATA_OPTIONS
from inferq.deploy.aws.tags import tag_spec
from inferq.deploy.errors import DeployError, aws_call

MIN_HOSTS = 1
"""--min-workers when only --max-workers is given."""

MAX_HOSTS = 20
"""--max-workers when only --min-workers is given."""

CPU_TARGET = 70.0
"""The second policy's target: the group's average CPU utilization (percent)."""

WARMUP_SECONDS = 300
"""The group's default instance warm-up: a new host's metrics count (and scale-in may start) after this."""

DRAIN_TIMEOUT_SECONDS = 900
"""The termination hook's heartbeat timeout: how long a leaving host may take to give its jobs back before AWS
goes on (CONTINUE) without it."""

GROUP_TAG = defaults.GROUP_TAG

NAMESPACE = backlog.NAMESPACE


HOOK = {"LifecycleTransition": "autoscaling:EC2_INSTANCE_TERMINATING", "HeartbeatTimeout": DRAIN_TIMEOUT_SECONDS,
        "DefaultResult": "CONTINUE"}
"""The termination hook: a leaving host is held (Terminating:Wait) until it completes the action, at most the
timeout; CONTINUE then, since the host gave back what it could and the hook must not keep a dead host forever."""


@dataclass(frozen=True)
class Group:
    """What the operator asked of the group."""

    min_hosts: int
    max_hosts: int
    desired: int
    target_wait_seconds: float = backlog.TARGET_WAIT_SECONDS
    texts_per_second_per_worker: float = backlog.TEXTS_PER_SECOND_PER_WORKER
    cpu_target: float = CPU_TARGET

    @property
    def target(self) -> float:
        return backlog.target_backlog(self.target_wait_seconds, self.texts_per_second_per_worker)


def group_from_options(workers: int, min_workers: int | None, max_workers: int | None, **policy: float) -> Group | None:
    """The group asked for on the command line, or None (neither flag: the fixed hosts of today)."""
    if min_workers is None and max_workers is None:
        return None
    low = MIN_HOSTS if min_workers is None else min_workers
    high = max(MAX_HOSTS, low) if max_workers is None else max_workers
    if low < 0 or high < 1 or low > high:
        raise DeployError(f"--min-workers {low} and --max-workers {high}: need 0 <= min <= max and max >= 1")
    return Group(low, high, min(max(workers, low), high), **policy)


@dataclass(frozen=True)
class Names:
    cluster: str

    @property
    def group(self) -> str:
        return f"{self.cluster}-workers"

    @property
    def template(self) -> str:
        return f"{self.cluster}-workers"

    @property
    def worker_role(self) -> str:
        return f"{self.cluster}-worker"

    @property
    def orchestrator_role(self) -> str:
        return f"{self.cluster}-orchestrator"

    @property
    def hook(self) -> str:
        return f"{self.cluster}-drain"

    @property
    def backlog_policy(self) -> str:
        return f"{self.cluster}-backlog-per-worker"

    @property
    def cpu_policy(self) -> str:
        return f"{self.cluster}-cpu"

    def bucket(self, account: str, region: str) -> str:
        """The cluster's private bucket, where `fab deploy` puts the worker image by digest."""
        return f"inferq-{self.cluster}-{account}-{region}"

    @property
    def parameters(self) -> str:
        """The SSM path of the worker secrets (SecureString)."""
        return f"/inferq/{self.cluster}/worker/"


@dataclass(frozen=True)
class Clients:
    iam: Any
    autoscaling: Any
    region: str
    account: str
    s3: Any = None
    ssm: Any = None


def connect(region: str, sts: Any) -> Clients:
    """IAM and Auto Scaling clients of the region, with the account (from STS) for ARNs."""
    import boto3
    from botocore.config import Config

    config = Config(retries={"mode": "standard", "total_max_attempts": defaults.AWS_MAX_ATTEMPTS})
    session = boto3.session.Session()
    with aws_call("asking STS for the account"):
        account = sts.get_caller_identity()["Account"]
    return Clients(session.client("iam", config=config),
                   session.client("autoscaling", region_name=region, config=config), region, account,
                   session.client("s3", region_name=region, config=config),
                   session.client("ssm", region_name=region, config=config))


def iam_tags(cluster: str, role: str) -> list[dict]:
    return [{"Key": defaults.TAG_KEY, "Value": cluster}, {"Key": defaults.ROLE_TAG_KEY, "Value": role}]


ASSUME_EC2 = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]})


def worker_policy(names: Names, region: str, account: str) -> dict:
    """Least privilege for a worker host of this cluster."""
    bucket = names.bucket(account, region)
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "ReadTheClusterImage", "Effect": "Allow", "Action": ["s3:GetObject"],
         "Resource": [f"arn:aws:s3:::{bucket}/images/*"]},
        # The boot script reads the whole path (GetParametersByPath is authorized on the path itself).
        {"Sid": "ReadTheWorkerSecrets", "Effect": "Allow",
         "Action": ["ssm:GetParameter", "ssm:GetParameters", "ssm:GetParametersByPath"],
         "Resource": [f"arn:aws:ssm:{region}:{account}:parameter{names.parameters.rstrip('/')}",
                      f"arn:aws:ssm:{region}:{account}:parameter{names.parameters}*"]},
        {"Sid": "PutTheClusterMetrics", "Effect": "Allow", "Action": ["cloudwatch:PutMetricData"], "Resource": "*",
         "Condition": {"StringEquals": {"cloudwatch:namespace": NAMESPACE}}},
        {"Sid": "LeaveTheGroup", "Effect": "Allow",
         "Action": ["autoscaling:CompleteLifecycleAction", "autoscaling:RecordLifecycleActionHeartbeat"],
         "Resource": [f"arn:aws:autoscaling:{region}:{account}:autoScalingGroup:*:"
                      f"autoScalingGroupName/{names.group}"]},
    ]}


def orchestrator_policy() -> dict:
    """The orchestrator publishes the backlog, and may do nothing else with its role."""
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "PutTheClusterMetrics", "Effect": "Allow", "Action": ["cloudwatch:PutMetricData"], "Resource": "*",
         "Condition": {"StringEquals": {"cloudwatch:namespace": NAMESPACE}}}]}


def _exists(call, *codes: str) -> Any:
    """call()'s answer, or None when AWS says the thing does not exist."""
    from botocore.exceptions import ClientError

    try:
        return call()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in codes:
            return None
        raise


def ensure_role(iam, cluster: str, name: str, role: str, policy: dict, report, dry_run: bool) -> int:
    """A role for EC2 with its one inline policy, and an instance profile of the same name holding it."""
    changes = 0
    verb = "would create" if dry_run else "create"
    with aws_call(f"looking up role {name}"):
        found = _exists(lambda: iam.get_role(RoleName=name), "NoSuchEntity")
    if found and {"Key": defaults.TAG_KEY, "Value": cluster} not in iam.list_role_tags(RoleName=name)["Tags"]:
        raise DeployError(f"IAM role {name} exists but is not tagged {defaults.TAG_KEY}={cluster}: not ours; "
                          "delete or rename it, or pass another --cluster")
    if not found:
        report(f"{verb} IAM role {name} (assumed by EC2) and its instance profile")
        changes += 1
        if not dry_run:
            with aws_call(f"creating role {name}"):
                iam.create_role(RoleName=name, AssumeRolePolicyDocument=ASSUME_EC2, Tags=iam_tags(cluster, role),
                                Description=f"inferq {role} hosts of cluster {cluster}")
    if not dry_run:
        with aws_call(f"writing the policy of role {name}"):
            # Put every time: converges a policy edited by hand back to what this version of inferq grants.
            iam.put_role_policy(RoleName=name, PolicyName=name, PolicyDocument=json.dumps(policy))
        with aws_call(f"creating instance profile {name}"):
            profile = _exists(lambda: iam.get_instance_profile(InstanceProfileName=name), "NoSuchEntity")
            if not profile:
                iam.create_instance_profile(InstanceProfileName=name, Tags=iam_tags(cluster, role))
                profile = iam.get_instance_profile(InstanceProfileName=name)
            if not any(r["RoleName"] == name for r in profile["InstanceProfile"]["Roles"]):
                iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
    return changes


def template_data(cluster: str, names: Names, image: dict, instance_type: str, volume_gb: int, key_name: str,
                  group_id: str, user_data: str) -> dict:
    """The launch template's data: what instances.launch_request gives a fixed worker, plus the profile."""
    import base64

    tags = [{**spec, "Tags": spec["Tags"] + [{"Key": GROUP_TAG, "Value": names.group}]}
            for kind in ("instance", "volume", "network-interface")
            for spec in tag_spec(kind, cluster, "worker", "worker-auto")]
    data: dict[str, Any] = {
        "ImageId": image["ImageId"], "InstanceType": instance_type,
        "IamInstanceProfile": {"Name": names.worker_role},
        "MetadataOptions": dict(METADATA_OPTIONS),
        "BlockDeviceMappings": [{"DeviceName": image.get("RootDeviceName", "/dev/sda1"),
                                 "Ebs": {"VolumeSize": volume_gb, "VolumeType": "gp3", "Encrypted": True,
                                         "DeleteOnTermination": True}}],
        "TagSpecifications": tags,
        "SecurityGroupIds": [group_id],
    }
    if key_name:
        data["KeyName"] = key_name
    if user_data:
        data["UserData"] = base64.b64encode(user_data.encode()).decode()
    return data


def find_template(ec2, names: Names) -> dict | None:
    with aws_call(f"looking up launch template {names.template}"):
        reply = _exists(lambda: ec2.describe_launch_templates(LaunchTemplateNames=[names.template]),
                        "InvalidLaunchTemplateName.NotFoundException")
    return reply["LaunchTemplates"][0] if reply and reply["LaunchTemplates"] else None


def ensure_template(ec2, cluster: str, names: Names, data: dict, report, dry_run: bool) -> int:
    """The launch template, made once; a second run with other data adds a version and makes it the default."""
    found = find_template(ec2, names)
    verb = "would" if dry_run else ""
    if found is None:
        report(f"{verb + ' ' if verb else ''}create launch template {names.template} ({data['ImageId']}, "
               f"{data['InstanceType']}; IMDSv2 required, root volume encrypted)".strip())
        if not dry_run:
            with aws_call(f"creating launch template {names.template}"):
                ec2.create_launch_template(LaunchTemplateName=names.template, LaunchTemplateData=data,
                                           TagSpecifications=tag_spec("launch-template", cluster, "workers",
                                                                      "workers"))
        return 1
    with aws_call(f"reading launch template {names.template}"):
        current = ec2.describe_launch_template_versions(LaunchTemplateName=names.template,
                                                        Versions=["$Default"])["LaunchTemplateVersions"][0]
    if _same(current["LaunchTemplateData"], data):
        return 0
    report(f"{'would add' if dry_run else 'add'} a version of launch template {names.template} and make it the "
           "default (hosts launched from now on use it)")
    if not dry_run:
        with aws_call(f"adding a version to launch template {names.template}"):
            version = ec2.create_launch_template_version(LaunchTemplateName=names.template,
                                                         LaunchTemplateData=data)["LaunchTemplateVersion"]
            ec2.modify_launch_template(LaunchTemplateName=names.template,
                                       DefaultVersion=str(version["VersionNumber"]))
    return 1


def _same(stored: dict, wanted: dict) -> bool:
    """Whether what EC2 stored is the data asked for (on the fields that matter for a host)."""
    keys = ("ImageId", "InstanceType", "KeyName", "UserData", "SecurityGroupIds")
    return all(stored.get(k) == wanted.get(k) for k in keys) and \
        stored.get("IamInstanceProfile", {}).get("Name") == wanted["IamInstanceProfile"]["Name"]


def subnets(ec2, vpc_id: str) -> list[str]:
    with aws_call("looking up the default VPC's subnets"):
        found = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["Subnets"]
    chosen = [s["SubnetId"] for s in found if s.get("DefaultForAz")] or [s["SubnetId"] for s in found]
    if not chosen:
        raise DeployError(f"the default VPC {vpc_id} has no subnet for the worker group")
    return sorted(chosen)


def find_group(autoscaling, names: Names) -> dict | None:
    with aws_call(f"looking up Auto Scaling group {names.group}"):
        groups = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[names.group])["AutoScalingGroups"]
    return groups[0] if groups else None


def policies(names: Names, group: Group) -> list[dict]:
    """PutScalingPolicy's arguments of the two target-tracking policies."""
    return [
        {"AutoScalingGroupName": names.group, "PolicyName": names.backlog_policy,
         "PolicyType": "TargetTrackingScaling", "EstimatedInstanceWarmup": WARMUP_SECONDS,
         "TargetTrackingConfiguration": {
             "CustomizedMetricSpecification": {
                 "MetricName": backlog.BACKLOG_PER_WORKER, "Namespace": NAMESPACE, "Statistic": "Average",
                 "Dimensions": [{"Name": backlog.CLUSTER_DIMENSION, "Value": names.cluster}]},
             "TargetValue": group.target, "DisableScaleIn": False}},
        {"AutoScalingGroupName": names.group, "PolicyName": names.cpu_policy,
         "PolicyType": "TargetTrackingScaling", "EstimatedInstanceWarmup": WARMUP_SECONDS,
         "TargetTrackingConfiguration": {
             "PredefinedMetricSpecification": {"PredefinedMetricType": "ASGAverageCPUUtilization"},
             "TargetValue": group.cpu_target, "DisableScaleIn": False}},
    ]


def ensure_group(clients: Clients, cluster: str, names: Names, group: Group, subnet_ids: list[str], report,
                 dry_run: bool) -> int:
    """The group (desired capacity only when it is made: later, the policies own it), its hook and policies."""
    autoscaling, changes = clients.autoscaling, 0
    found = find_group(autoscaling, names)
    target = f"BacklogPerWorker {group.target:g} ({group.texts_per_second_per_worker:g} texts/s x " \
             f"{group.target_wait_seconds:g} s) and CPU {group.cpu_target:g} %"
    if found is None:
        report(f"{'would create' if dry_run else 'create'} Auto Scaling group {names.group}: {group.min_hosts} to "
               f"{group.max_hosts} hosts, {group.desired} now; target tracking on {target}; termination hook "
               f"{names.hook}")
        changes += 1
        if not dry_run:
            tags = [{"Key": k, "Value": v, "PropagateAtLaunch": False, "ResourceId": names.group,
                     "ResourceType": "auto-scaling-group"}
                    for k, v in ((defaults.TAG_KEY, cluster), (defaults.ROLE_TAG_KEY, "workers"))]
            with aws_call(f"creating Auto Scaling group {names.group}"):
                autoscaling.create_auto_scaling_group(
                    AutoScalingGroupName=names.group,
                    LaunchTemplate={"LaunchTemplateName": names.template, "Version": "$Default"},
                    MinSize=group.min_hosts, MaxSize=group.max_hosts, DesiredCapacity=group.desired,
                    VPCZoneIdentifier=",".join(subnet_ids), DefaultInstanceWarmup=WARMUP_SECONDS,
                    HealthCheckType="EC2", HealthCheckGracePeriod=WARMUP_SECONDS, Tags=tags,
                    # The hook is part of the group from its first instance: none leaves without draining.
                    LifecycleHookSpecificationList=[{**HOOK, "LifecycleHookName": names.hook}])
    elif (found["MinSize"], found["MaxSize"]) != (group.min_hosts, group.max_hosts):
        report(f"{'would set' if dry_run else 'set'} {names.group} to {group.min_hosts} to {group.max_hosts} hosts")
        changes += 1
        if not dry_run:
            with aws_call(f"updating Auto Scaling group {names.group}"):
                autoscaling.update_auto_scaling_group(AutoScalingGroupName=names.group, MinSize=group.min_hosts,
                                                      MaxSize=group.max_hosts)
    if dry_run:
        return changes
    with aws_call(f"describing the lifecycle hooks of {names.group}"):
        hooks = autoscaling.describe_lifecycle_hooks(AutoScalingGroupName=names.group)["LifecycleHooks"]
    if not any(h["LifecycleHookName"] == names.hook for h in hooks):
        # Made with the group on AWS; put here when missing (deleted by hand, or an endpoint such as moto that
        # ignores LifecycleHookSpecificationList).
        with aws_call(f"putting lifecycle hook {names.hook}"):
            autoscaling.put_lifecycle_hook(**{**HOOK, "LifecycleHookName": names.hook,
                                              "AutoScalingGroupName": names.group})
    with aws_call(f"describing the policies of {names.group}"):
        stored = {p["PolicyName"]: p for p in autoscaling.describe_policies(
            AutoScalingGroupName=names.group)["ScalingPolicies"]}
    for request in policies(names, group):
        have = stored.get(request["PolicyName"], {}).get("TargetTrackingConfiguration", {}).get("TargetValue")
        if have is None or not math.isclose(have, request["TargetTrackingConfiguration"]["TargetValue"]):
            if found is not None:
                value = request["TargetTrackingConfiguration"]["TargetValue"]
                report(f"set policy {request['PolicyName']} to {value:g}")
                changes += 1
            with aws_call(f"putting scaling policy {request['PolicyName']}"):
                autoscaling.put_scaling_policy(**request)
    return changes


def associate_orchestrator_profile(ec2, names: Names, instance_id: str, report) -> int:
    """Give the orchestrator its profile (PutMetricData for the backlog publisher), once."""
    with aws_call("describing the orchestrator's instance profile"):
        have = ec2.describe_iam_instance_profile_associations(
            Filters=[{"Name": "instance-id", "Values": [instance_id]}])["IamInstanceProfileAssociations"]
    if any(a.get("State") in ("associating", "associated") for a in have):
        return 0
    from inferq.deploy.retry import eventually

    report(f"give the orchestrator instance profile {names.orchestrator_role}")
    with aws_call("giving the orchestrator its instance profile"):
        # A profile made a moment ago is not visible to EC2 at once (IAM is eventually consistent).
        eventually("giving the orchestrator its instance profile", lambda: ec2.associate_iam_instance_profile(
            IamInstanceProfile={"Name": names.orchestrator_role}, InstanceId=instance_id), "InvalidParameterValue")
    return 1


BOOT_DIR = "/opt/inferq"
"""Where a group host keeps the compose project (as `fab deploy` does) and, under bin/, the boot and drain scripts."""


def boot_user_data(cluster: str, bucket: str, region: str) -> str:
    """The group hosts' user data: the host key as every host makes it (deploy.host_keys), the packages, the boot
    script (deploy/boot.py) run once, and the drain watcher (deploy/drain.py) as a systemd unit. Both scripts
    travel as they are in this checkout (gzip, base64); neither holds a secret: the secrets come from SSM."""
    import base64
    import gzip
    from pathlib import Path

    from inferq.deploy import host_keys

    here = Path(__file__).resolve().parent
    names = Names(cluster)

    def packed(path: Path) -> str:
        return base64.b64encode(gzip.compress(path.read_bytes(), mtime=0)).decode()

    config = json.loads(host_keys.user_data()[len(host_keys.CLOUD_CONFIG):])
    drain = (f"/usr/bin/python3 {BOOT_DIR}/bin/drain.py --group {names.group} --hook {names.hook} "
             f"--region {region}")
    config.update({
        "package_update": True,
        # Ubuntu's packages: Docker and compose v2 (as `fab deploy` installs them), zstd, and what the scripts import.
        "packages": ["docker.io", "docker-compose-v2", "zstd", "python3-boto3", "python3-requests"],
        "write_files": [
            {"path": f"{BOOT_DIR}/bin/boot.py", "encoding": "gz+b64", "content": packed(here / "boot.py"),
             "permissions": "0755"},
            {"path": f"{BOOT_DIR}/bin/drain.py", "encoding": "gz+b64", "content": packed(here / "drain.py"),
             "permissions": "0755"},
            {"path": "/etc/systemd/system/inferq-drain.service", "permissions": "0644", "content": (
                "[Unit]\nDescription=inferq: leave the worker group without losing a job\n"
                "After=docker.service\n\n[Service]\n"
                f"ExecStart={drain}\nRestart=always\nRestartSec=5\n\n[Install]\nWantedBy=multi-user.target\n")},
        ],
        "runcmd": [
            ["python3", f"{BOOT_DIR}/bin/boot.py", "--cluster", cluster, "--bucket", bucket, "--region", region,
             "--dir", BOOT_DIR],
            ["systemctl", "enable", "--now", "inferq-drain.service"],
        ],
    })
    return host_keys.CLOUD_CONFIG + json.dumps(config)


def up(ec2, clients: Clients, cluster: str, group: Group, image: dict, instance_type: str, volume_gb: int,
       key_name: str, group_id: str, vpc_id: str, report, dry_run: bool) -> int:
    """Everything the group needs, in dependency order; the number of changes."""
    names = Names(cluster)
    from inferq.deploy import image_store

    bucket = names.bucket(clients.account, clients.region)
    if dry_run:
        report(f"would make sure of bucket {bucket} (private, encrypted, TLS only): the worker image's place")
        changes = 0
    else:
        changes = int(image_store.ensure_bucket(clients.s3, bucket, clients.region, cluster))
        if changes:
            report(f"create bucket {bucket} (private, encrypted, TLS only): the worker image's place")
    changes += ensure_role(clients.iam, cluster, names.worker_role, "worker",
                          worker_policy(names, clients.region, clients.account), report, dry_run)
    changes += ensure_role(clients.iam, cluster, names.orchestrator_role, "orchestrator", orchestrator_policy(),
                           report, dry_run)
    user_data = boot_user_data(cluster, bucket, clients.region)
    data = template_data(cluster, names, image, instance_type, volume_gb, key_name, group_id, user_data)
    changes += ensure_template(ec2, cluster, names, data, report, dry_run)
    changes += ensure_group(clients, cluster, names, group, [] if dry_run else subnets(ec2, vpc_id), report,
                            dry_run)
    return changes


# --- down ---

def found_resources(ec2, clients: Clients, cluster: str) -> list[tuple[str, str]]:
    """(kind, name) of what the group path made and still exists: what `down` deletes."""
    names, found = Names(cluster), []
    group = find_group(clients.autoscaling, names)
    if group and {"Key": defaults.TAG_KEY, "Value": cluster} in [
            {"Key": t["Key"], "Value": t["Value"]} for t in group.get("Tags", [])]:
        found.append(("Auto Scaling group", names.group))
    template = find_template(ec2, names)
    if template and {"Key": defaults.TAG_KEY, "Value": cluster} in template.get("Tags", []):
        found.append(("launch template", names.template))
    from inferq.deploy import image_store

    bucket = names.bucket(clients.account, clients.region)
    with aws_call(f"looking up bucket {bucket}"):
        tags = _exists(lambda: clients.s3.get_bucket_tagging(Bucket=bucket), "NoSuchBucket", "NoSuchTagSet", "404")
    if tags and {"Key": defaults.TAG_KEY, "Value": cluster} in tags["TagSet"]:
        found.append(("S3 bucket", bucket))
    with aws_call("looking up the worker parameters"):
        if clients.ssm.get_parameters_by_path(Path=image_store.parameter_path(cluster), MaxResults=1)["Parameters"]:
            found.append(("SSM parameters", image_store.parameter_path(cluster)))
    for name in (names.worker_role, names.orchestrator_role):
        with aws_call(f"looking up role {name}"):
            role = _exists(lambda n=name: clients.iam.get_role(RoleName=n), "NoSuchEntity")
        if role and {"Key": defaults.TAG_KEY, "Value": cluster} in clients.iam.list_role_tags(RoleName=name)["Tags"]:
            found.append(("IAM role and instance profile", name))
    return found


def down(ec2, clients: Clients, cluster: str, doomed: list[tuple[str, str]], report) -> None:
    """Delete them: the group first (its instances, hook and policies with it), then the template and IAM."""
    names = Names(cluster)
    kinds = {kind for kind, _ in doomed}
    if "Auto Scaling group" in kinds:
        with aws_call(f"deleting the policies and hooks of {names.group}"):
            # AWS deletes them with the group; deleted first anyway, so that nothing outlives it anywhere (moto
            # keeps a deleted group's policies).
            for policy in clients.autoscaling.describe_policies(AutoScalingGroupName=names.group)["ScalingPolicies"]:
                clients.autoscaling.delete_policy(AutoScalingGroupName=names.group, PolicyName=policy["PolicyName"])
            for hook in clients.autoscaling.describe_lifecycle_hooks(
                    AutoScalingGroupName=names.group)["LifecycleHooks"]:
                clients.autoscaling.delete_lifecycle_hook(AutoScalingGroupName=names.group,
                                                          LifecycleHookName=hook["LifecycleHookName"])
        with aws_call(f"deleting Auto Scaling group {names.group}"):
            # ForceDelete terminates its instances without waiting for the lifecycle hook: `down` is the end of
            # the cluster, Redis and its queue go with the orchestrator.
            clients.autoscaling.delete_auto_scaling_group(AutoScalingGroupName=names.group, ForceDelete=True)
        from inferq.deploy.retry import eventually

        def gone() -> None:
            if find_group(clients.autoscaling, names) is not None:
                from botocore.exceptions import ClientError

                raise ClientError({"Error": {"Code": "GroupStillThere", "Message": names.group}}, "Describe")

        with aws_call(f"waiting for {names.group} to be deleted"):
            eventually(f"waiting for {names.group} to be deleted", gone, "GroupStillThere")
    if "launch template" in kinds:
        with aws_call(f"deleting launch template {names.template}"):
            ec2.delete_launch_template(LaunchTemplateName=names.template)
    if "S3 bucket" in kinds or "SSM parameters" in kinds:
        from inferq.deploy import image_store

        bucket = names.bucket(clients.account, clients.region) if "S3 bucket" in kinds else "-"
        image_store.delete_all(clients.s3, clients.ssm, cluster, bucket)
    iam = clients.iam
    for kind, name in doomed:
        if kind != "IAM role and instance profile":
            continue
        with aws_call(f"deleting role {name} and its instance profile"):
            profile = _exists(lambda n=name: iam.get_instance_profile(InstanceProfileName=n), "NoSuchEntity")
            if profile:
                for role in profile["InstanceProfile"]["Roles"]:
                    iam.remove_role_from_instance_profile(InstanceProfileName=name, RoleName=role["RoleName"])
                iam.delete_instance_profile(InstanceProfileName=name)
            for policy in iam.list_role_policies(RoleName=name)["PolicyNames"]:
                iam.delete_role_policy(RoleName=name, PolicyName=policy)
            for attached in iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]:
                iam.detach_role_policy(RoleName=name, PolicyArn=attached["PolicyArn"])
            iam.delete_role(RoleName=name)


# --- fab status ---

def group_status(group: dict, cluster: str, target: float | None = None) -> dict:
    """The group as `fab status` shows it: desired, in-service, pending and leaving hosts, the latest
    BacklogPerWorker datapoint, the policy's target and the last scaling activity. group: inventory.autoscaling."""
    from datetime import UTC, datetime, timedelta

    import boto3

    region, name = group["region"], group["group"]
    autoscaling = boto3.client("autoscaling", region_name=region)
    cloudwatch = boto3.client("cloudwatch", region_name=region)
    with aws_call(f"describing Auto Scaling group {name}"):
        found = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"]
    if not found:
        return {"group": name, "missing": True}
    states = [i["LifecycleState"] for i in found[0].get("Instances", [])]
    now = datetime.now(UTC)
    with aws_call("reading BacklogPerWorker"):
        points = cloudwatch.get_metric_statistics(
            Namespace=NAMESPACE, MetricName=backlog.BACKLOG_PER_WORKER,
            Dimensions=[{"Name": backlog.CLUSTER_DIMENSION, "Value": cluster}], StartTime=now - timedelta(minutes=15),
            EndTime=now + timedelta(minutes=1), Period=60, Statistics=["Average"])["Datapoints"]
        policies = autoscaling.describe_policies(AutoScalingGroupName=name)["ScalingPolicies"]
        activities = autoscaling.describe_scaling_activities(AutoScalingGroupName=name, MaxRecords=1)["Activities"]
    latest = max(points, key=lambda p: p["Timestamp"]) if points else None
    targets = [p["TargetTrackingConfiguration"]["TargetValue"] for p in policies
               if p.get("TargetTrackingConfiguration", {}).get("CustomizedMetricSpecification")]
    last = activities[0] if activities else None
    return {
        "group": name, "min": found[0]["MinSize"], "max": found[0]["MaxSize"],
        "desired": found[0]["DesiredCapacity"],
        "in_service": sum(s == "InService" for s in states),
        "pending": sum(s.startswith("Pending") for s in states),
        "leaving": sum(s.startswith("Terminating") for s in states),
        "backlog_per_worker": round(latest["Average"], 1) if latest else None,
        "backlog_at": latest["Timestamp"].strftime("%H:%M:%SZ") if latest else None,
        "target": targets[0] if targets else target,
        "last_activity": f"{last['Description']} ({last['StatusCode']}, {last['StartTime']:%Y-%m-%d %H:%M}Z)"
        if last else None,
    }


def status_line(found: dict) -> str:
    if found.get("missing"):
        return f"worker group {found['group']}: not found (deleted outside inferq-provision?)"
    backlog_text = (f"BacklogPerWorker {found['backlog_per_worker']:g} at {found['backlog_at']}"
                    if found["backlog_per_worker"] is not None else "BacklogPerWorker: no datapoint in 15 min")
    return (f"worker group {found['group']}: desired {found['desired']} ({found['min']}-{found['max']}), "
            f"in service {found['in_service']}, pending {found['pending']}, leaving {found['leaving']}; "
            f"{backlog_text} (target {found['target']:g}); last scaling activity: {found['last_activity'] or 'none'}")
