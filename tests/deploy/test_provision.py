"""inferq-provision against moto in server mode: the README's commands, run as child processes."""
from __future__ import annotations

import json
import stat

import pytest
import requests

from tests.deploy.commands import ADMIN_CIDR, DOWN, DOWN_DRY, UP, UP_DRY
from tests.deploy.conftest import NEWEST_UBUNTU, run_command

ADMIN = ADMIN_CIDR
TAG = "inferq:cluster"


@pytest.fixture()
def fresh(moto_endpoint, aws_env, tmp_path):
    """An empty moto and a working directory of our own (secrets/ and state/ land there)."""
    requests.post(moto_endpoint + "/moto-api/reset", timeout=5).raise_for_status()
    return tmp_path


def tagged(ec2) -> dict[str, list]:
    """Everything in moto carrying the cluster tag, by kind (instances not terminated)."""
    tag = [{"Name": f"tag:{TAG}", "Values": ["inferq"]}]
    live = tag + [{"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}]
    return {
        "instances": [i for r in ec2.describe_instances(Filters=live)["Reservations"] for i in r["Instances"]],
        "groups": ec2.describe_security_groups(Filters=tag)["SecurityGroups"],
        "keys": ec2.describe_key_pairs(Filters=tag)["KeyPairs"],
        "volumes": ec2.describe_volumes(Filters=tag)["Volumes"],
    }


def rules(group) -> set[tuple[int, str]]:
    found = set()
    for perm in group["IpPermissions"]:
        assert perm["IpProtocol"] == "tcp" and perm["FromPort"] == perm["ToPort"], perm
        found |= {(perm["FromPort"], r["CidrIp"]) for r in perm.get("IpRanges", [])}
        found |= {(perm["FromPort"], p["GroupId"]) for p in perm.get("UserIdGroupPairs", [])}
    return found


def test_dry_run_prints_the_plan_and_changes_nothing(fresh, aws_env, ec2):
    out = run_command(UP_DRY, aws_env, fresh).stdout
    assert "would create key pair inferq-key" in out
    assert "would create security group inferq-orchestrator" in out
    assert "would allow tcp/6379 from sg-<new workers>" in out
    assert "would launch worker-5 (c6i.large" in out and "would launch orchestrator (t3.small" in out
    assert NEWEST_UBUNTU in out
    assert "nothing done" in out
    assert tagged(ec2) == {"instances": [], "groups": [], "keys": [], "volumes": []}
    assert not (fresh / "secrets").exists() and not (fresh / "state").exists()


def test_up_creates_the_cluster_and_a_second_run_creates_nothing(fresh, aws_env, ec2):
    out = run_command(UP, aws_env, fresh).stdout
    made = tagged(ec2)
    assert len(made["instances"]) == 6 and len(made["groups"]) == 2 and len(made["keys"]) == 1, out
    assert len(made["volumes"]) == 6  # root volumes are tagged too (and deleted with their instance)
    types = sorted(i["InstanceType"] for i in made["instances"])
    assert types == ["c6i.large"] * 5 + ["t3.small"]
    assert {i["ImageId"] for i in made["instances"]} == {NEWEST_UBUNTU}
    assert all(i["State"]["Name"] == "running" for i in made["instances"])

    key = fresh / "secrets" / "inferq" / "ssh-key.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    assert "PRIVATE KEY" in key.read_text()

    inventory = json.loads((fresh / "state" / "inventory.json").read_text())
    hosts = inventory["hosts"]
    assert [h["name"] for h in hosts] == ["orchestrator"] + [f"worker-{i}" for i in range(1, 6)]
    assert [h["role"] for h in hosts] == ["orchestrator"] + ["worker"] * 5
    by_id = {i["InstanceId"]: i for i in made["instances"]}
    for host in hosts:
        instance = by_id[host["instance_id"]]
        assert host["public_ip"] == instance["PublicIpAddress"]
        assert host["private_ip"] == instance["PrivateIpAddress"]
    assert inventory["key_file"] == "secrets/inferq/ssh-key.pem"

    again = run_command(UP, aws_env, fresh).stdout
    assert "0 change(s); 6 instance(s) running" in again
    after = tagged(ec2)
    assert sorted(i["InstanceId"] for i in after["instances"]) == sorted(by_id)
    assert len(after["groups"]) == 2 and len(after["keys"]) == 1
    assert json.loads((fresh / "state" / "inventory.json").read_text()) == inventory


def test_security_groups_open_only_the_api_to_the_world(fresh, aws_env, ec2):
    run_command(UP, aws_env, fresh)
    groups = {g["GroupName"]: g for g in tagged(ec2)["groups"]}
    workers, orchestrator = groups["inferq-workers"], groups["inferq-orchestrator"]
    assert rules(orchestrator) == {(5000, "0.0.0.0/0"), (22, ADMIN), (5555, ADMIN), (6379, workers["GroupId"])}
    assert rules(workers) == {(22, ADMIN)}
    # Redis: reachable from the worker group only, never from an address range.
    redis_sources = {source for port, source in rules(orchestrator) if port == 6379}
    assert redis_sources == {workers["GroupId"]}
    world = {port for g in groups.values() for port, source in rules(g) if source == "0.0.0.0/0"}
    assert world == {5000}
    instances = tagged(ec2)["instances"]
    roles = {i["InstanceId"]: [g["GroupId"] for g in i["SecurityGroups"]] for i in instances}
    assert sorted(map(tuple, roles.values())).count((workers["GroupId"],)) == 5

    # A changed admin address is converged: the old one is revoked, nothing is added twice.
    out = run_command(UP.replace(ADMIN, "198.51.100.0/24"), aws_env, fresh).stdout
    assert "revoke tcp/22 from 203.0.113.7/32" in out
    groups = {g["GroupName"]: g for g in tagged(ec2)["groups"]}
    assert rules(groups["inferq-workers"]) == {(22, "198.51.100.0/24")}


def test_teardown_deletes_what_is_tagged_and_nothing_else(fresh, aws_env, ec2):
    vpc = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    bystander_group = ec2.create_security_group(GroupName="not-ours", Description="x", VpcId=vpc)["GroupId"]
    bystander = ec2.run_instances(ImageId=NEWEST_UBUNTU, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    run_command(UP, aws_env, fresh)

    plan = run_command(DOWN_DRY, aws_env, fresh).stdout
    assert "would delete instance worker-3" in plan and "9 resource(s) would be deleted" in plan
    assert len(tagged(ec2)["instances"]) == 6

    out = run_command(DOWN, aws_env, fresh).stdout
    assert "deleted 9 resource(s)" in out
    assert tagged(ec2) == {"instances": [], "groups": [], "keys": [], "volumes": []}
    assert not (fresh / "secrets" / "inferq" / "ssh-key.pem").exists()
    assert ec2.describe_security_groups(GroupIds=[bystander_group])["SecurityGroups"]
    state = ec2.describe_instances(InstanceIds=[bystander])["Reservations"][0]["Instances"][0]["State"]["Name"]
    assert state == "running"
    assert "deleted 0 resource(s)" in run_command(DOWN, aws_env, fresh).stdout


def test_aws_errors_are_one_line_with_the_error_code(fresh, aws_env, ec2):
    vpc = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    # An untagged group squatting on the name inferq would give its own group.
    ec2.create_security_group(GroupName="inferq-workers", Description="someone else's", VpcId=vpc)
    result = run_command(UP, aws_env, fresh, check=False)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("inferq-provision: creating the workers security group failed: InvalidGroup.Duplicate")


def test_the_whole_internet_is_refused_as_admin_cidr(fresh, aws_env, ec2):
    result = run_command("inferq-provision up --admin-cidr 0.0.0.0/0", aws_env, fresh, check=False)
    assert result.returncode == 1 and "must not be the whole Internet" in result.stderr
    assert tagged(ec2)["instances"] == []
