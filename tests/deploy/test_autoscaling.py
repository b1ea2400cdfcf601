"""`inferq-provision up --min-workers/--max-workers` against moto in server mode: the worker group, its launch
template, its roles and policy, its scaling policies and lifecycle hook as AWS stores them, and `down` leaving
nothing behind. moto runs no policy and boots no host: what a host does is the lab's."""
from __future__ import annotations

import ast
import base64
import gzip
import json

import pytest
import requests
import yaml

from inferq.deploy import autoscaling as group_path
from inferq.deploy import backlog
from tests.deploy.conftest import NEWEST_UBUNTU, ROOT, run_command
from tests.deploy.test_provision import DOWN, UP, client, tagged

GROUP_UP = UP + " --workers 5 --min-workers 1 --max-workers 20"


@pytest.fixture()
def fresh(moto_endpoint, aws_env, tmp_path):
    """An empty moto and a working directory of our own (as test_provision's)."""
    requests.post(moto_endpoint + "/moto-api/reset", timeout=5).raise_for_status()
    return tmp_path


def everything(aws_env) -> dict:
    """What the group path makes, as moto stores it (empty lists once deleted)."""
    autoscaling, ec2, iam = (client(aws_env, s) for s in ("autoscaling", "ec2", "iam"))
    roles = [r for r in iam.list_roles()["Roles"] if r["RoleName"].startswith("inferq-")]
    profiles = [p for p in iam.list_instance_profiles()["InstanceProfiles"]
                if p["InstanceProfileName"].startswith("inferq-")]
    return {
        "buckets": [b["Name"] for b in client(aws_env, "s3").list_buckets()["Buckets"]],
        "groups": autoscaling.describe_auto_scaling_groups()["AutoScalingGroups"],
        "templates": ec2.describe_launch_templates()["LaunchTemplates"],
        "policies": autoscaling.describe_policies()["ScalingPolicies"],
        "roles": roles, "profiles": profiles,
    }


def test_up_makes_the_group_as_asked_and_down_leaves_nothing(fresh, aws_env, ec2, monkeypatch):
    out = run_command(GROUP_UP, aws_env, fresh).stdout
    assert "create Auto Scaling group inferq-workers: 1 to 20 hosts, 5 now" in out
    assert "create bucket inferq-inferq-123456789012-us-east-1 (private, encrypted, TLS only)" in out
    autoscaling, iam = client(aws_env, "autoscaling"), client(aws_env, "iam")
    workers_sg = ec2.describe_security_groups(GroupNames=["inferq-workers"])["SecurityGroups"][0]["GroupId"]

    # The launch template: the recorded AMI and a fixed worker's settings, plus the worker profile.
    template = ec2.describe_launch_template_versions(LaunchTemplateName="inferq-workers",
                                                    Versions=["$Default"])["LaunchTemplateVersions"][0]
    data = template["LaunchTemplateData"]
    inventory = json.loads((fresh / "state" / "inventory.json").read_text())
    assert data["ImageId"] == NEWEST_UBUNTU == inventory["amis"]["worker"]
    # fab deploy and update publish the image for the group's hosts where the inventory says.
    assert inventory["autoscaling"] == {"group": "inferq-workers", "hook": "inferq-drain", "region": "us-east-1",
                                        "bucket": "inferq-inferq-123456789012-us-east-1"}
    assert data["InstanceType"] == "c6i.large" and data["KeyName"] == "inferq-key"
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["MetadataOptions"]["HttpPutResponseHopLimit"] == 1
    assert data["BlockDeviceMappings"][0]["Ebs"]["Encrypted"] is True
    assert data["IamInstanceProfile"] == {"Name": "inferq-worker"}
    assert data["SecurityGroupIds"] == [workers_sg]
    # (moto lists the template's own tags here too, as a launch-template entry.)
    specs = {s["ResourceType"]: {t["Key"]: t["Value"] for t in s["Tags"]} for s in data["TagSpecifications"]}
    for kind in ("instance", "volume", "network-interface"):
        assert specs[kind]["inferq:cluster"] == "inferq" and specs[kind]["inferq:group"] == "inferq-workers", specs

    # The user data: the host key as every host makes it, then the boot script run once and the drain watcher as a
    # unit, both exactly this checkout's files; no secret (they come from SSM).
    config = yaml.safe_load(base64.b64decode(data["UserData"]).decode())
    assert config["ssh_genkeytypes"] == ["ed25519"] and "docker-compose-v2" in config["packages"]
    files = {f["path"]: f for f in config["write_files"]}
    for name in ("boot.py", "drain.py"):
        packed = files[f"/opt/inferq/bin/{name}"]
        assert gzip.decompress(base64.b64decode(packed["content"])) == (ROOT / "deploy" / name).read_bytes()
    assert ("ExecStart=/usr/bin/python3 /opt/inferq/bin/drain.py --group inferq-workers --hook inferq-drain "
            "--region us-east-1") in files["/etc/systemd/system/inferq-drain.service"]["content"]
    assert config["runcmd"][0] == ["python3", "/opt/inferq/bin/boot.py", "--cluster", "inferq", "--bucket",
                                   "inferq-inferq-123456789012-us-east-1", "--region", "us-east-1", "--dir",
                                   "/opt/inferq"]
    assert "PRIVATE KEY" not in str(config) and "password" not in str(config).lower()

    # The group, its hook and its two target-tracking policies.
    group = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=["inferq-workers"])["AutoScalingGroups"][0]
    assert (group["MinSize"], group["MaxSize"], group["DesiredCapacity"]) == (1, 20, 5)
    assert group["LaunchTemplate"]["LaunchTemplateName"] == "inferq-workers"
    assert {"inferq:cluster": "inferq"}.items() <= {t["Key"]: t["Value"] for t in group["Tags"]}.items()
    hooks = autoscaling.describe_lifecycle_hooks(AutoScalingGroupName="inferq-workers")["LifecycleHooks"]
    assert [(h["LifecycleHookName"], h["LifecycleTransition"], h["HeartbeatTimeout"], h["DefaultResult"])
            for h in hooks] == [("inferq-drain", "autoscaling:EC2_INSTANCE_TERMINATING", 900, "CONTINUE")]
    policies = {p["PolicyName"]: p for p in autoscaling.describe_policies(
        AutoScalingGroupName="inferq-workers")["ScalingPolicies"]}
    backlog_policy = policies["inferq-backlog-per-worker"]["TargetTrackingConfiguration"]
    assert backlog_policy["TargetValue"] == pytest.approx(backlog.TEXTS_PER_SECOND_PER_WORKER * 60)
    assert backlog_policy["CustomizedMetricSpecification"] == {
        "MetricName": "BacklogPerWorker", "Namespace": "inferq", "Statistic": "Average",
        "Dimensions": [{"Name": "Cluster", "Value": "inferq"}]}
    cpu = policies["inferq-cpu"]["TargetTrackingConfiguration"]
    assert cpu["PredefinedMetricSpecification"]["PredefinedMetricType"] == "ASGAverageCPUUtilization"
    assert cpu["TargetValue"] == 70.0
    assert {p["PolicyType"] for p in policies.values()} == {"TargetTrackingScaling"}

    # The roles: least privilege, each statement scoped to this cluster.
    worker = json.loads(json.dumps(iam.get_role_policy(RoleName="inferq-worker",
                                                       PolicyName="inferq-worker")["PolicyDocument"]))
    statements = {s["Sid"]: s for s in worker["Statement"]}
    assert set(statements) == {"ReadTheClusterImage", "ReadTheWorkerSecrets", "PutTheClusterMetrics",
                               "LeaveTheGroup"}
    assert statements["ReadTheClusterImage"]["Action"] == ["s3:GetObject"]
    assert statements["ReadTheClusterImage"]["Resource"] == [
        "arn:aws:s3:::inferq-inferq-123456789012-us-east-1/images/*"]
    assert statements["ReadTheWorkerSecrets"]["Resource"] == [
        "arn:aws:ssm:us-east-1:123456789012:parameter/inferq/inferq/worker",
        "arn:aws:ssm:us-east-1:123456789012:parameter/inferq/inferq/worker/*"]
    assert statements["PutTheClusterMetrics"]["Condition"] == {"StringEquals": {"cloudwatch:namespace": "inferq"}}
    assert statements["LeaveTheGroup"]["Resource"] == [
        "arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:*:autoScalingGroupName/inferq-workers"]
    assert all("*" not in str(s["Action"]) for s in worker["Statement"])
    assert [r["RoleName"] for r in iam.get_instance_profile(
        InstanceProfileName="inferq-worker")["InstanceProfile"]["Roles"]] == ["inferq-worker"]
    orchestrator_policy = iam.get_role_policy(RoleName="inferq-orchestrator",
                                              PolicyName="inferq-orchestrator")["PolicyDocument"]
    assert [s["Action"] for s in orchestrator_policy["Statement"]] == [["cloudwatch:PutMetricData"]]
    orchestrator = inventory["hosts"][0]
    assert orchestrator["role"] == "orchestrator" and len(inventory["hosts"]) == 1  # no worker-N: the group's
    associations = ec2.describe_iam_instance_profile_associations(
        Filters=[{"Name": "instance-id", "Values": [orchestrator["instance_id"]]}])["IamInstanceProfileAssociations"]
    assert [a["IamInstanceProfile"]["Arn"].rsplit("/", 1)[1] for a in associations] == ["inferq-orchestrator"]

    # What `fab status` shows of the group (its AWS part: the lab has no group).
    backlog_now = client(aws_env, "cloudwatch")
    backlog_now.put_metric_data(Namespace="inferq", MetricData=[{
        "MetricName": "BacklogPerWorker", "Dimensions": [{"Name": "Cluster", "Value": "inferq"}], "Value": 812.0}])
    for name, value in aws_env.items():
        monkeypatch.setenv(name, value)
    shown = group_path.group_status(inventory["autoscaling"], "inferq")
    assert (shown["desired"], shown["min"], shown["max"], shown["backlog_per_worker"]) == (5, 1, 20, 812.0)
    assert shown["in_service"] + shown["pending"] == 5 and shown["target"] == pytest.approx(4614.0)
    line = group_path.status_line(shown)
    assert line.startswith("worker group inferq-workers: desired 5 (1-20), in service ") and \
        "BacklogPerWorker 812 at " in line and "(target 4614)" in line, line

    # A second run changes nothing; the fixed path's workers are not launched beside the group.
    again = run_command(GROUP_UP, aws_env, fresh).stdout
    assert "0 change(s)" in again, again
    assert not [i for i in tagged(ec2)["instances"]
                if {"Key": "inferq:name", "Value": "worker-1"} in i.get("Tags", [])]

    # down: the group (and what moto launched for it), the template, both roles and profiles, the rest as before.
    # (what `fab deploy` would publish for the group's hosts: deploy/image_store.py)
    client(aws_env, "ssm").put_parameter(Name="/inferq/inferq/worker/REDIS_URL", Value="x", Type="SecureString")
    gone = run_command(DOWN, aws_env, fresh).stdout
    assert "delete Auto Scaling group inferq-workers" in gone and "delete launch template inferq-workers" in gone
    assert "delete S3 bucket inferq-inferq-123456789012-us-east-1" in gone
    assert "delete SSM parameters /inferq/inferq/worker/" in gone
    assert client(aws_env, "ssm").get_parameters_by_path(Path="/inferq/inferq/worker/")["Parameters"] == []
    assert everything(aws_env) == {"buckets": [], "groups": [], "templates": [], "policies": [], "roles": [],
                                   "profiles": []}
    assert tagged(ec2)["instances"] == [] and tagged(ec2)["groups"] == [] and tagged(ec2)["keys"] == []
    assert "deleted 0 resource(s)" in run_command(DOWN, aws_env, fresh).stdout
    assert json.loads((fresh / "state" / "inventory.json").read_text())["autoscaling"] == {}


def test_min_max_flags_are_checked_and_the_dry_run_plans_the_group(fresh, aws_env, ec2):
    wrong = run_command(UP + " --min-workers 5 --max-workers 2", aws_env, fresh, check=False)
    assert wrong.returncode == 1 and "--min-workers 5 and --max-workers 2" in wrong.stderr
    out = run_command(UP + " --max-workers 8 --target-wait-seconds 20 --dry-run", aws_env, fresh).stdout
    assert ("would create Auto Scaling group inferq-workers: 1 to 8 hosts, 5 now; target tracking on "
            "BacklogPerWorker 1538 (76.9 texts/s x 20 s) and CPU 70 %") in out
    assert "would create IAM role inferq-worker" in out and "would create launch template inferq-workers" in out
    assert "would launch worker-1" not in out and "would launch orchestrator" in out
    # The quota must allow the group's maximum: 1 orchestrator (2 vCPUs) + 8 hosts x 2.
    assert "pre-flight: vCPUs: 18 more needed" in out
    assert everything(aws_env) == {"buckets": [], "groups": [], "templates": [], "policies": [], "roles": [],
                                   "profiles": []}


def test_the_scripts_a_host_runs_stand_alone():
    """boot.py and drain.py travel in the user data to hosts without inferq: they import the standard library,
    boto3 and requests only."""
    for name in ("boot.py", "drain.py"):
        tree = ast.parse((ROOT / "deploy" / name).read_text())
        modules = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                   for alias in node.names}
        modules |= {node.module.split(".")[0] for node in ast.walk(tree)
                    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
        assert modules <= {"__future__", "argparse", "hashlib", "json", "os", "shlex", "subprocess", "sys", "time",
                           "pathlib", "typing", "collections", "threading", "urllib", "boto3", "requests"}, modules
