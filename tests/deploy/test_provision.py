"""inferq-provision against moto in server mode: the README's commands, run as child processes."""
from __future__ import annotations

import base64
import json
import stat

import pytest
import requests

from inferq.deploy import host_keys
from tests.deploy import commands
from tests.deploy.commands import ADMIN_CIDR, DOWN, DOWN_DRY, UP_DRY
from tests.deploy.conftest import AMIS, NEWEST_DEBIAN, NEWEST_UBUNTU, ROOT, run_command

ADMIN = ADMIN_CIDR
TAG = "inferq:cluster"

UP = commands.UP + " --host-key-wait 0"
"""moto boots no host, so no console ever shows host keys: `up` is told not to wait for them (the lab pins
keys from consoles, tests/deploy/cluster.py)."""


@pytest.fixture()
def fresh(moto_endpoint, aws_env, tmp_path):
    """An empty moto and a working directory of our own (secrets/ and state/ land there)."""
    requests.post(moto_endpoint + "/moto-api/reset", timeout=5).raise_for_status()
    return tmp_path


def client(aws_env, service: str, region: str = "us-east-1", **credentials):
    """A boto3 client of the moto server (the test's own view, or another identity's)."""
    import boto3

    keys = credentials or {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    return boto3.client(service, region_name=region, endpoint_url=aws_env["AWS_ENDPOINT_URL"], **keys)


def one_line(result) -> str:
    """The single line a failed command printed on stderr."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, (result.returncode, result.stdout, result.stderr)
    return lines[0]


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
    assert f"worker-1 (c6i.large, {NEWEST_UBUNTU} " in out and f"orchestrator (t3.small, {NEWEST_DEBIAN} " in out
    assert "IMDSv2 required, root volume encrypted" in out
    # The pre-flight ran first: who, each permission by EC2 DryRun, and the vCPUs (moto has no EC2 quota).
    assert "pre-flight: AWS credentials of arn:aws:sts::123456789012:user/moto, region us-east-1" in out
    assert ("pre-flight: permitted (EC2 DryRun): ec2:AuthorizeSecurityGroupIngress, ec2:CreateKeyPair, "
            "ec2:CreateSecurityGroup, ec2:RunInstances") in out
    assert ("pre-flight: vCPUs: 12 more needed, 0 in use in us-east-1; the quota was not checked: Service Quotas "
            "answered NoSuchResourceException for ec2/L-1216C47A") in out
    assert out.index("pre-flight:") < out.index("would create key pair")
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
    images = {i["InstanceType"]: i["ImageId"] for i in made["instances"]}
    assert images == {"c6i.large": NEWEST_UBUNTU, "t3.small": NEWEST_DEBIAN}
    assert all(i["State"]["Name"] == "running" for i in made["instances"])

    key = fresh / "secrets" / "inferq" / "ssh-key.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    assert "PRIVATE KEY" in key.read_text()
    ca_key = fresh / "secrets" / "inferq" / "cluster-ca.key"  # the cluster's CA, made at `up` (Redis's TLS)
    assert stat.S_IMODE(ca_key.stat().st_mode) == 0o600 and (fresh / "secrets" / "inferq" / "cluster-ca.crt").exists()

    inventory = json.loads((fresh / "state" / "inventory.json").read_text())
    hosts = inventory["hosts"]
    assert [h["name"] for h in hosts] == ["orchestrator"] + [f"worker-{i}" for i in range(1, 6)]
    assert [h["role"] for h in hosts] == ["orchestrator"] + ["worker"] * 5
    assert [h["ssh_user"] for h in hosts] == ["admin"] + ["ubuntu"] * 5  # Debian's login, Ubuntu's
    by_id = {i["InstanceId"]: i for i in made["instances"]}
    for host in hosts:
        instance = by_id[host["instance_id"]]
        assert host["public_ip"] == instance["PublicIpAddress"]
        assert host["private_ip"] == instance["PrivateIpAddress"]
    assert inventory["key_file"] == "secrets/inferq/ssh-key.pem"
    assert inventory["state"] == "ready" and inventory["region"] == "us-east-1"
    assert inventory["known_hosts"] == "state/known_hosts"

    again = run_command(UP, aws_env, fresh).stdout
    assert "0 change(s); 6 instance(s) running" in again
    assert "pre-flight: permitted (EC2 DryRun): ec2:AuthorizeSecurityGroupIngress\n" in again  # nothing to create
    after = tagged(ec2)
    assert sorted(i["InstanceId"] for i in after["instances"]) == sorted(by_id)
    assert len(after["groups"]) == 2 and len(after["keys"]) == 1
    assert json.loads((fresh / "state" / "inventory.json").read_text()) == inventory


def test_security_groups_open_only_the_api_to_the_world(fresh, aws_env, ec2):
    run_command(UP, aws_env, fresh)
    groups = {g["GroupName"]: g for g in tagged(ec2)["groups"]}
    workers, orchestrator = groups["inferq-workers"], groups["inferq-orchestrator"]
    # The API's TLS port to the world, SSH to the admin, Redis to the workers; Flower only through SSH.
    assert rules(orchestrator) == {(443, "0.0.0.0/0"), (22, ADMIN), (6379, workers["GroupId"])}
    assert rules(workers) == {(22, ADMIN)}
    # Redis: reachable from the worker group only, never from an address range.
    redis_sources = {source for port, source in rules(orchestrator) if port == 6379}
    assert redis_sources == {workers["GroupId"]}
    world = {port for g in groups.values() for port, source in rules(g) if source == "0.0.0.0/0"}
    assert world == {443}
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
    assert "would delete instance worker-3" in plan
    assert "9 resource(s) tagged inferq:cluster=inferq in us-east-1 would be deleted" in plan
    assert len(tagged(ec2)["instances"]) == 6

    out = run_command(DOWN, aws_env, fresh).stdout
    assert "deleted 9 resource(s) tagged inferq:cluster=inferq in us-east-1" in out
    assert tagged(ec2) == {"instances": [], "groups": [], "keys": [], "volumes": []}
    assert not (fresh / "secrets" / "inferq" / "ssh-key.pem").exists()
    assert not (fresh / "secrets" / "inferq" / "cluster-ca.key").exists()
    assert not (fresh / "state" / "known_hosts").exists()
    assert json.loads((fresh / "state" / "inventory.json").read_text())["state"] == "torn-down"
    assert ec2.describe_security_groups(GroupIds=[bystander_group])["SecurityGroups"]
    state = ec2.describe_instances(InstanceIds=[bystander])["Reservations"][0]["Instances"][0]["State"]["Name"]
    assert state == "running"
    assert "deleted 0 resource(s) tagged" in run_command(DOWN, aws_env, fresh).stdout


def test_an_instance_with_the_cluster_tag_but_no_name_stops_up_before_any_change(fresh, aws_env, ec2):
    # Not one `up` made (each carries its name from launch): which host it stands for cannot be guessed.
    stray = ec2.run_instances(ImageId=NEWEST_UBUNTU, MinCount=1, MaxCount=1, TagSpecifications=[
        {"ResourceType": "instance", "Tags": [{"Key": TAG, "Value": "inferq"}]}])["Instances"][0]["InstanceId"]
    line = one_line(run_command(UP, aws_env, fresh, check=False))
    assert line == (f"inferq-provision: instance {stray} carries the cluster tag but no inferq:name tag: tag it with "
                    "its name (orchestrator, worker-N) or terminate it, then run again")
    assert [i["InstanceId"] for i in tagged(ec2)["instances"]] == [stray]
    assert tagged(ec2)["keys"] == [] and tagged(ec2)["groups"] == []


def test_aws_errors_are_one_line_and_down_removes_what_was_made(fresh, aws_env, ec2):
    vpc = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    # An untagged group squatting on the name inferq would give its own group.
    squatter = ec2.create_security_group(GroupName="inferq-workers", Description="someone else's", VpcId=vpc)
    result = run_command(UP, aws_env, fresh, check=False)
    line = one_line(result)
    assert line.startswith("inferq-provision: creating the workers security group failed: InvalidGroup.Duplicate")
    # What was made before the failure carries the tag, and the inventory names the region: `down` finds it.
    assert len(tagged(ec2)["keys"]) == 1
    assert json.loads((fresh / "state" / "inventory.json").read_text())["state"] == "provisioning"
    status = run_command(f"fab -r {ROOT}/deploy status", aws_env, fresh, check=False)
    assert one_line(status).startswith("fab: cluster inferq in us-east-1 is not ready")
    assert "deleted 1 resource(s)" in run_command(DOWN, aws_env, fresh).stdout
    assert tagged(ec2) == {"instances": [], "groups": [], "keys": [], "volumes": []}
    assert ec2.describe_security_groups(GroupIds=[squatter["GroupId"]])["SecurityGroups"]  # not ours: left alone


def test_the_whole_internet_is_refused_as_admin_cidr(fresh, aws_env, ec2):
    result = run_command("inferq-provision up --admin-cidr 0.0.0.0/0", aws_env, fresh, check=False)
    assert result.returncode == 1 and "must not be the whole Internet" in result.stderr
    assert tagged(ec2)["instances"] == []


def test_instances_require_imdsv2_and_boot_from_encrypted_volumes(fresh, aws_env, ec2):
    run_command(UP, aws_env, fresh)
    made = tagged(ec2)
    for instance in made["instances"]:
        options = instance["MetadataOptions"]
        assert (options["HttpTokens"], options["HttpEndpoint"], options["HttpPutResponseHopLimit"]) == \
            ("required", "enabled", 1), instance["InstanceId"]
    assert len(made["volumes"]) == 6 and all(v["Encrypted"] for v in made["volumes"]), made["volumes"]

    # An instance that allows IMDSv1 (made before, or changed by hand) is brought back to IMDSv2 by `up`.
    loose = next(i for i in made["instances"] if any(t["Value"] == "worker-3" for t in i["Tags"]))
    ec2.modify_instance_metadata_options(InstanceId=loose["InstanceId"], HttpTokens="optional")
    out = run_command(UP, aws_env, fresh).stdout
    assert "require IMDSv2 on worker-3" in out and "1 change(s); 6 instance(s) running" in out
    again = ec2.describe_instances(InstanceIds=[loose["InstanceId"]])["Reservations"][0]["Instances"][0]
    assert again["MetadataOptions"]["HttpTokens"] == "required"


def test_user_data_holds_no_private_key_and_keys_are_pinned_only_from_the_console(fresh, aws_env, ec2):
    out = run_command(UP, aws_env, fresh).stdout
    inventory = json.loads((fresh / "state" / "inventory.json").read_text())
    for host in inventory["hosts"]:
        raw = ec2.describe_instance_attribute(InstanceId=host["instance_id"], Attribute="userData")
        data = base64.b64decode(raw["UserData"]["Value"]).decode()
        # cloud-init makes the host's own key at first boot and prints it to the console; no key travels in.
        config = json.loads(data.removeprefix("#cloud-config\n"))
        assert config["ssh_genkeytypes"] == ["ed25519"] and config["ssh"] == {"emit_keys_to_console": True}
        assert not host_keys.private_material_in(data) and "ssh_keys" not in config
    # moto's consoles show a canned boot log and no key block: nothing is pinned, nothing is trusted on first use.
    console = ec2.get_console_output(InstanceId=inventory["hosts"][0]["instance_id"])["Output"]
    assert "Linux version" in console and host_keys.keys_in_console(console) == []
    assert (fresh / "state" / "known_hosts").read_text() == ""
    assert "not pinned yet: orchestrator, worker-1, worker-2, worker-3, worker-4, worker-5 printed no SSH host key" \
        in out
    assert inventory["state"] == "ready"


def test_a_consoles_key_block_is_read_as_cloud_init_prints_it():
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHc2Yy1ZuHoD+2K5bYxS6Q0J8qvZ2mCqf8QeTmVYy0hM"
    # cloud-init's write-ssh-key-fingerprints sends each line through `logger -t ec2`: a prefix on every line.
    block = ["ec2: -----BEGIN SSH HOST KEY FINGERPRINTS-----", "ec2: 256 SHA256:abc root@ip-10-0-0-1 (ED25519)",
             "ec2: -----END SSH HOST KEY FINGERPRINTS-----", "ec2: -----BEGIN SSH HOST KEY KEYS-----",
             f"ec2: {key} root@ip-10-0-0-1", "ec2: -----END SSH HOST KEY KEYS-----"]
    old = [line.replace("IHc2", "OLD0") for line in block]
    assert host_keys.keys_in_console("\n".join(["[    1.0] Linux", *old, "reboot", *block, "login:"])) == [key]
    assert host_keys.keys_in_console("\n".join(block[:-1])) == []  # a block still being printed is not one yet
    assert host_keys.private_material_in("ssh_keys: {ed25519_private: ...}")
    assert not host_keys.private_material_in(host_keys.user_data())


def test_the_ami_is_resolved_once_and_later_hosts_use_the_recorded_one(fresh, aws_env, ec2):
    run_command(UP, aws_env, fresh)
    path = fresh / "state" / "inventory.json"
    inventory = json.loads(path.read_text())
    assert inventory["amis"] == {"worker": NEWEST_UBUNTU, "orchestrator": NEWEST_DEBIAN}
    # Say the cluster was made when the older Ubuntu image was the newest: the recorded one stays the workers'.
    older = AMIS[0]["ami_id"]
    inventory["amis"]["worker"] = older
    path.write_text(json.dumps(inventory))
    gone = next(h for h in inventory["hosts"] if h["name"] == "worker-3")["instance_id"]
    ec2.terminate_instances(InstanceIds=[gone])
    out = run_command(UP, aws_env, fresh).stdout
    assert f"launch worker-3 (c6i.large, {older} " in out
    replaced = [i for i in tagged(ec2)["instances"] if any(t["Value"] == "worker-3" for t in i["Tags"])]
    assert [i["ImageId"] for i in replaced] == [older]
    assert json.loads(path.read_text())["amis"]["worker"] == older


def test_launches_carry_a_client_token_and_the_orchestrator_termination_protection(fresh, aws_env, ec2):
    run_command(UP, aws_env, fresh)
    made = tagged(ec2)["instances"]
    names = {i["InstanceId"]: next(t["Value"] for t in i["Tags"] if t["Key"] == "inferq:name") for i in made}
    tokens = {names[i["InstanceId"]]: i.get("ClientToken", "") for i in made}
    assert all(token.startswith(f"inferq-{name}-") for name, token in tokens.items()), tokens
    assert len(set(tokens.values())) == 6
    assert json.loads((fresh / "state" / "inventory.json").read_text())["launch_tokens"] == {}  # all found by tag
    protection = {names[i]: ec2.describe_instance_attribute(InstanceId=i, Attribute="disableApiTermination")
                  ["DisableApiTermination"]["Value"] for i in names}
    assert protection == {name: name == "orchestrator" for name in names.values()}
    orchestrator = next(i for i, name in names.items() if name == "orchestrator")
    with pytest.raises(Exception, match="OperationNotPermitted"):
        ec2.terminate_instances(InstanceIds=[orchestrator])
    # An orchestrator that lost it (by hand) gets it back; `down` lifts it, then terminates.
    ec2.modify_instance_attribute(InstanceId=orchestrator, DisableApiTermination={"Value": False})
    assert "protect orchestrator from termination" in run_command(UP, aws_env, fresh).stdout
    assert "deleted 9 resource(s)" in run_command(DOWN, aws_env, fresh).stdout
    assert tagged(ec2)["instances"] == []


def test_burstable_instances_get_standard_credits():
    from inferq.deploy.aws import instances

    # moto records no credit specification (it answers "standard" for every instance): the request is checked.
    image = {"ImageId": "ami-1", "RootDeviceName": "/dev/xvda"}
    small = instances.launch_request("c", "orchestrator", "orchestrator", image, "t3.small", 30, client_token="t")
    large = instances.launch_request("c", "worker", "worker-1", image, "c6i.large", 30)
    assert small["CreditSpecification"] == {"CpuCredits": "standard"} and small["DisableApiTermination"] is True
    assert "CreditSpecification" not in large and "DisableApiTermination" not in large
    assert [instances.burstable(t) for t in ("t3.small", "t3a.micro", "t4g.nano", "t2.micro", "c6i.large",
                                             "trn1.2xlarge")] == [True, True, True, True, False, False]


def test_ipv6_rules_are_converged_too(fresh, aws_env, ec2):
    run_command(UP, aws_env, fresh)
    workers = next(g for g in tagged(ec2)["groups"] if g["GroupName"] == "inferq-workers")
    ec2.authorize_security_group_ingress(GroupId=workers["GroupId"], IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "Ipv6Ranges": [{"CidrIpv6": "::/0"}]}])
    out = run_command(UP, aws_env, fresh).stdout
    assert "revoke tcp/22 from ::/0 into inferq-workers" in out
    again = ec2.describe_security_groups(GroupIds=[workers["GroupId"]])["SecurityGroups"][0]
    assert not [p for p in again["IpPermissions"] if p.get("Ipv6Ranges")], again["IpPermissions"]


def test_aws_clients_retry_in_standard_mode(aws_env, monkeypatch):
    from inferq.deploy.aws import clients
    from inferq.deploy.defaults import AWS_MAX_ATTEMPTS

    for key, value in aws_env.items():
        monkeypatch.setenv(key, value)
    made = clients.connect("us-east-1")
    for client in (made.ec2, made.sts, made.quotas):
        assert client.meta.config.retries == {"mode": "standard", "total_max_attempts": AWS_MAX_ATTEMPTS}


def test_up_merges_into_the_inventory_and_writes_it_mode_600(fresh, aws_env, ec2):
    run_command(UP, aws_env, fresh)
    path = fresh / "state" / "inventory.json"
    inventory = json.loads(path.read_text())
    inventory["env"] = {"INFERQ_MAX_TEXTS": "64"}
    inventory["runtime_options"] = {"build_args": {"MODEL": "offline:base"}}
    path.write_text(json.dumps(inventory))
    run_command(UP, aws_env, fresh)
    again = json.loads(path.read_text())
    assert again["env"] == {"INFERQ_MAX_TEXTS": "64"}
    assert again["runtime_options"] == {"build_args": {"MODEL": "offline:base"}}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    run_command(DOWN, aws_env, fresh)
    assert json.loads(path.read_text())["env"] == {"INFERQ_MAX_TEXTS": "64"}  # torn down, still the operator's


def test_down_removes_the_clusters_secrets_unless_told_to_keep_them(fresh, aws_env, ec2):
    from inferq.deploy import credentials

    run_command(UP, aws_env, fresh)
    made = credentials.load_or_create(fresh / "secrets", "inferq")  # what `fab deploy` would have generated
    run_command(DOWN + " --keep-secrets", aws_env, fresh)
    assert credentials.load_or_create(fresh / "secrets", "inferq") == made
    run_command(UP, aws_env, fresh)
    out = run_command(DOWN, aws_env, fresh).stdout
    assert "kept the cluster's secrets" not in out
    assert not credentials.path_of(fresh / "secrets", "inferq").exists()
    assert credentials.load_or_create(fresh / "secrets", "inferq").redis_password != made.redis_password


def test_down_finds_the_cluster_in_the_region_of_its_inventory(fresh, aws_env, ec2):
    # boto3's default region is us-east-1 here (AWS_DEFAULT_REGION); the cluster is made elsewhere.
    run_command(UP + " --region eu-west-1", aws_env, fresh)
    ireland = client(aws_env, "ec2", "eu-west-1")
    assert len(tagged(ireland)["instances"]) == 6 and tagged(ec2)["instances"] == []

    plan = run_command(DOWN_DRY, aws_env, fresh).stdout
    assert "9 resource(s) tagged inferq:cluster=inferq in eu-west-1 would be deleted" in plan
    conflict = run_command(DOWN + " --region us-east-1", aws_env, fresh, check=False)
    assert one_line(conflict) == (
        "inferq-provision: state/inventory.json is the inventory of cluster inferq in eu-west-1, not --region "
        "us-east-1: drop --region, or pass --inventory with another file")
    out = run_command(DOWN, aws_env, fresh).stdout
    assert "deleted 9 resource(s) tagged inferq:cluster=inferq in eu-west-1" in out
    assert tagged(ireland) == {"instances": [], "groups": [], "keys": [], "volumes": []}

    # The inventory stays, marked torn down: fab refuses it (its addresses may be someone else's now) ...
    inventory = json.loads((fresh / "state" / "inventory.json").read_text())
    assert (inventory["state"], inventory["region"], inventory["hosts"]) == ("torn-down", "eu-west-1", [])
    refused = run_command(f"fab -r {ROOT}/deploy submit --text hello", aws_env, fresh, check=False)
    assert one_line(refused) == (
        "fab: cluster inferq in eu-west-1 was torn down by `inferq-provision down` (state/inventory.json); its "
        "addresses may be someone else's now: run `inferq-provision up` for a new cluster")
    # ... and a second down still looks in eu-west-1.
    assert "deleted 0 resource(s) tagged inferq:cluster=inferq in eu-west-1" in run_command(DOWN, aws_env, fresh).stdout


@pytest.fixture()
def enforced_iam(moto_endpoint):
    """moto checking every request against its IAM users' policies (as AWS does); off again afterwards."""
    def enforce():
        requests.post(moto_endpoint + "/moto-api/reset-auth", data=b"0", timeout=5).raise_for_status()
    yield enforce
    requests.post(moto_endpoint + "/moto-api/reset-auth", data=b"inf", timeout=5).raise_for_status()


def limited_user(aws_env, allowed: list[str]) -> dict[str, str]:
    """An IAM user whose policy allows only `allowed`; its access key as environment variables."""
    iam = client(aws_env, "iam")
    iam.create_user(UserName="limited")
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": allowed, "Resource": "*"}]}
    iam.put_user_policy(UserName="limited", PolicyName="inferq", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="limited")["AccessKey"]
    return {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
            "AWS_SESSION_TOKEN": ""}


def test_preflight_names_every_missing_permission_and_creates_nothing(fresh, aws_env, ec2, enforced_iam):
    # Allowed to look, not to create: what an account with a read-only role would have.
    keys = limited_user(aws_env, ["ec2:Describe*", "ec2:AuthorizeSecurityGroupIngress", "sts:GetCallerIdentity",
                                  "servicequotas:GetServiceQuota"])
    enforced_iam()
    result = run_command(UP, {**aws_env, **keys}, fresh, check=False)
    assert one_line(result) == (
        "inferq-provision: pre-flight: arn:aws:iam::123456789012:user/limited may not ec2:CreateKeyPair (creating "
        "the key pair), ec2:CreateSecurityGroup (creating the workers security group), ec2:CreateSecurityGroup "
        "(creating the orchestrator security group), ec2:RunInstances (launching t3.small instances), "
        "ec2:RunInstances (launching c6i.large instances); grant these EC2 actions (docs/deploy.md lists them); "
        "nothing was created")
    # The same with --dry-run: the pre-flight is part of the plan.
    assert "may not ec2:CreateKeyPair" in one_line(run_command(UP_DRY, {**aws_env, **keys}, fresh, check=False))
    # Credentials AWS does not know are one line too.
    unknown = run_command(UP, aws_env, fresh, check=False)
    assert one_line(unknown) == (
        "inferq-provision: AWS refuses these credentials (InvalidClientTokenId): check AWS_PROFILE or "
        "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (nothing was created)")
    requests.post(aws_env["AWS_ENDPOINT_URL"] + "/moto-api/reset-auth", data=b"inf", timeout=5).raise_for_status()
    assert tagged(ec2) == {"instances": [], "groups": [], "keys": [], "volumes": []}
    assert not (fresh / "state").exists() and not (fresh / "secrets").exists()


def test_missing_credentials_and_a_wrong_region_are_one_line_each(fresh, aws_env, ec2):
    unset = "env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY -u AWS_SESSION_TOKEN -u AWS_PROFILE "
    nobody = run_command(unset + UP, aws_env, fresh, check=False)
    assert one_line(nobody) == ("inferq-provision: no AWS credentials found: set AWS_PROFILE, or AWS_ACCESS_KEY_ID "
                                "and AWS_SECRET_ACCESS_KEY (nothing was created)")
    nowhere = run_command(UP + " --region eu-nowhere-1", aws_env, fresh, check=False)
    assert one_line(nowhere).startswith(
        "inferq-provision: 'eu-nowhere-1' is not an EC2 region; pass --region with one such as eu-central-1, ")
    assert tagged(ec2) == {"instances": [], "groups": [], "keys": [], "volumes": []}
    assert not (fresh / "state").exists() and not (fresh / "secrets").exists()


def test_the_vcpu_quota_counts_what_already_runs_in_the_region(fresh, aws_env, ec2):
    # Two instances of someone else's (c5.xlarge: 4 vCPUs each) and one of another quota (inf1, Inferentia).
    ec2.run_instances(ImageId=NEWEST_UBUNTU, InstanceType="c5.xlarge", MinCount=2, MaxCount=2)
    ec2.run_instances(ImageId=NEWEST_UBUNTU, InstanceType="inf1.xlarge", MinCount=1, MaxCount=1)
    out = run_command(UP_DRY + " --workers 2", aws_env, fresh).stdout
    assert "pre-flight: vCPUs: 6 more needed, 8 in use in us-east-1;" in out


def test_the_vcpu_quota_check_itself():
    from inferq.deploy.aws import quotas

    # moto has no EC2 quotas, so the comparison is checked here; AWS's answer is a plain number.
    assert quotas.shortfall(limit=16, used=8, needed=12) and not quotas.shortfall(limit=32, used=8, needed=12)
    assert quotas.shortfall(limit=5, used=0, needed=12)  # a new account's quota: too low for the cluster
    assert [quotas.standard(t) for t in ("t3.small", "c6i.large", "m7g.medium", "z1d.large", "inf1.xlarge",
                                         "p4d.24xlarge", "g5.xlarge", "hpc7a.96xlarge", "mac2.metal")] == \
        [True, True, True, True, False, False, False, False, False]


HA_UP = UP + " --ha --workers 2"
"""The --ha layout, small: two orchestrators and two workers (worker-1 the standby host)."""


def names_of(instances: list[dict]) -> dict[str, str]:
    """instance id -> its inferq:name tag."""
    return {i["InstanceId"]: next(t["Value"] for t in i["Tags"] if t["Key"] == "inferq:name") for i in instances}


def protection(ec2, names: dict[str, str]) -> dict[str, bool]:
    """name -> whether the instance has termination protection."""
    return {name: ec2.describe_instance_attribute(InstanceId=i, Attribute="disableApiTermination")
            ["DisableApiTermination"]["Value"] for i, name in names.items()}


def test_up_ha_makes_two_protected_orchestrators_and_a_second_run_changes_nothing(fresh, aws_env, ec2):
    from inferq.deploy import inventory as inv

    run_command(HA_UP, aws_env, fresh)
    made = tagged(ec2)["instances"]
    names = names_of(made)
    assert sorted(names.values()) == ["orchestrator", "orchestrator-2", "worker-1", "worker-2"]
    # Both orchestrators are launched alike: type, AMI, user data, protection, a ClientToken of their own.
    by_name = {names[i["InstanceId"]]: i for i in made}
    first, second = by_name["orchestrator"], by_name["orchestrator-2"]
    assert (first["InstanceType"], first["ImageId"]) == (second["InstanceType"], second["ImageId"]) == \
        ("t3.small", NEWEST_DEBIAN)
    user_data = [ec2.describe_instance_attribute(InstanceId=i["InstanceId"], Attribute="userData")["UserData"]
                 for i in (first, second)]
    assert user_data[0] == user_data[1]
    assert second["ClientToken"].startswith("inferq-orchestrator-2-") and first["ClientToken"] != second["ClientToken"]
    assert protection(ec2, names) == {"orchestrator": True, "orchestrator-2": True, "worker-1": False,
                                      "worker-2": False}

    path = fresh / "state" / "inventory.json"
    inventory = inv.read(path)
    assert [h.name for h in inventory.hosts] == ["orchestrator", "orchestrator-2", "worker-1", "worker-2"]
    assert [h.ssh_user for h in inventory.hosts] == ["admin", "admin", "ubuntu", "ubuntu"]
    assert inventory.ha and inventory.orchestrator.name == "orchestrator" and inventory.standby.name == "worker-1"
    assert [h.name for h in inventory.sentinel_hosts] == ["orchestrator", "orchestrator-2", "worker-1"]

    written = json.loads(path.read_text())
    again = run_command(HA_UP, aws_env, fresh).stdout
    assert "0 change(s); 4 instance(s) running" in again
    assert sorted(names_of(tagged(ec2)["instances"])) == sorted(names)
    assert json.loads(path.read_text()) == written


def test_ha_rules_let_redis_and_sentinel_through_between_the_data_hosts_only(fresh, aws_env, ec2):
    run_command(HA_UP, aws_env, fresh)
    groups = {g["GroupName"]: g for g in tagged(ec2)["groups"]}
    workers, orchestrator = groups["inferq-workers"]["GroupId"], groups["inferq-orchestrator"]["GroupId"]
    # The orchestrator group names itself: replication and Sentinels between the two orchestrators.
    assert rules(groups["inferq-orchestrator"]) == {
        (443, "0.0.0.0/0"), (22, ADMIN), (6379, workers),
        (6379, orchestrator), (26379, orchestrator), (26379, workers)}
    # Every worker host may be reached on both ports by the data hosts; only the standby (worker-1) listens there.
    assert rules(groups["inferq-workers"]) == {
        (22, ADMIN), (6379, orchestrator), (26379, orchestrator), (6379, workers), (26379, workers)}
    world = {port for g in groups.values() for port, source in rules(g) if source == "0.0.0.0/0"}
    assert world == {443}

    # A rule lost by hand comes back, and only it: the self-referencing one. (Revoked as described: moto matches a
    # group pair only with its description.)
    sentinel = next(p for p in groups["inferq-orchestrator"]["IpPermissions"] if p["FromPort"] == 26379)
    ec2.revoke_security_group_ingress(GroupId=orchestrator, IpPermissions=[
        {**sentinel, "UserIdGroupPairs": [g for g in sentinel["UserIdGroupPairs"] if g["GroupId"] == orchestrator]}])
    out = run_command(HA_UP, aws_env, fresh).stdout
    assert f"allow tcp/26379 from {orchestrator} into inferq-orchestrator" in out
    assert "1 change(s); 4 instance(s) running" in out
    again = {g["GroupName"]: g for g in tagged(ec2)["groups"]}
    assert rules(again["inferq-orchestrator"]) == rules(groups["inferq-orchestrator"])


def test_ha_without_a_worker_host_is_refused_before_anything_is_made(fresh, aws_env, ec2):
    refused = "inferq-provision: " + \
        "--ha needs at least one fixed worker host: worker-1 runs the third Sentinel and Redis's second replica; " \
        "pass --workers 1 or more"
    assert one_line(run_command(UP + " --ha --workers 0", aws_env, fresh, check=False)) == refused
    assert one_line(run_command(UP_DRY + " --ha --workers 0", aws_env, fresh, check=False)) == refused
    # With a worker group as well: worker-1 must be a host of its own, the group's may go at any time.
    grouped = run_command(UP + " --ha --workers 0 --min-workers 0 --max-workers 2", aws_env, fresh, check=False)
    assert one_line(grouped) == refused
    assert tagged(ec2) == {"instances": [], "groups": [], "keys": [], "volumes": []}
    assert not (fresh / "state").exists() and not (fresh / "secrets").exists()


def test_up_without_ha_on_an_ha_cluster_is_refused(fresh, aws_env, ec2):
    run_command(UP + " --ha --workers 1", aws_env, fresh)
    before = tagged(ec2)
    refused = ("inferq-provision: cluster inferq has two orchestrators (the --ha layout: {}); `up` without --ha would "
               "leave the second one's Redis replica and the Sentinels stranded: pass --ha to keep the layout, or run "
               "`inferq-provision down` first; nothing was changed")
    for command in (UP + " --workers 1", UP_DRY + " --workers 1"):
        line = one_line(run_command(command, aws_env, fresh, check=False))
        assert line == refused.format("its instances include orchestrator-2")
    # Without the inventory, the tagged instances say it; with orchestrator-2 gone by hand, the inventory does.
    path = fresh / "state" / "inventory.json"
    written = path.read_text()
    path.unlink()
    line = one_line(run_command(UP + " --workers 1", aws_env, fresh, check=False))
    assert line == refused.format("its instances include orchestrator-2")
    path.write_text(written)
    second = next(i for i, name in names_of(before["instances"]).items() if name == "orchestrator-2")
    ec2.modify_instance_attribute(InstanceId=second, DisableApiTermination={"Value": False})
    ec2.terminate_instances(InstanceIds=[second])
    line = one_line(run_command(UP + " --workers 1", aws_env, fresh, check=False))
    assert line == refused.format("state/inventory.json lists two")
    after = tagged(ec2)
    assert sorted(names_of(after["instances"]).values()) == ["orchestrator", "worker-1"]
    assert after["groups"] == before["groups"] and path.read_text() == written
    # With --ha, `up` launches the missing orchestrator-2 again.
    assert "launch orchestrator-2 (t3.small" in run_command(UP + " --ha --workers 1", aws_env, fresh).stdout


def test_down_terminates_both_orchestrators_and_everything_else(fresh, aws_env, ec2):
    run_command(UP + " --ha --workers 1", aws_env, fresh)
    names = names_of(tagged(ec2)["instances"])
    assert protection(ec2, names) == {"orchestrator": True, "orchestrator-2": True, "worker-1": False}
    plan = run_command(DOWN_DRY, aws_env, fresh).stdout
    assert "would delete instance orchestrator-2" in plan and "would delete instance orchestrator " in plan
    out = run_command(DOWN, aws_env, fresh).stdout
    assert "deleted 6 resource(s) tagged inferq:cluster=inferq in us-east-1" in out  # 3 instances, 2 groups, key
    assert tagged(ec2) == {"instances": [], "groups": [], "keys": [], "volumes": []}
    states = {i["InstanceId"]: i["State"]["Name"]
              for r in ec2.describe_instances(InstanceIds=list(names))["Reservations"] for i in r["Instances"]}
    assert set(states.values()) == {"terminated"}


def test_ha_dry_run_plans_the_second_orchestrator_and_changes_nothing(fresh, aws_env, ec2):
    out = run_command(UP_DRY + " --ha --workers 2", aws_env, fresh).stdout
    assert "would launch orchestrator (t3.small" in out and "would launch orchestrator-2 (t3.small" in out
    assert "would launch worker-2 (c6i.large" in out and "would launch worker-3" not in out
    assert "would allow tcp/26379 from sg-<new orchestrator> into inferq-orchestrator" in out
    assert "would allow tcp/26379 from sg-<new workers> into inferq-orchestrator" in out
    assert "would allow tcp/6379 from sg-<new workers> into inferq-workers" in out
    # Both orchestrators count against the quota: 2 x t3.small + 2 x c6i.large, 2 vCPUs each.
    assert "pre-flight: vCPUs: 8 more needed, 0 in use in us-east-1;" in out
    assert "nothing done" in out
    assert tagged(ec2) == {"instances": [], "groups": [], "keys": [], "volumes": []}
    assert not (fresh / "secrets").exists() and not (fresh / "state").exists()


def test_without_ha_a_group_rule_added_by_hand_is_revoked_the_groups_own_too(fresh, aws_env, ec2):
    run_command(UP + " --workers 1", aws_env, fresh)
    groups = {g["GroupName"]: g["GroupId"] for g in tagged(ec2)["groups"]}
    workers, orchestrator = groups["inferq-workers"], groups["inferq-orchestrator"]
    # What --ha would add, by hand on a single-layout cluster: a rule naming its own group, one naming the other.
    for group, source in ((workers, workers), (orchestrator, orchestrator), (workers, orchestrator)):
        ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 26379, "ToPort": 26379,
             "UserIdGroupPairs": [{"GroupId": source, "Description": "by hand"}]}])
    out = run_command(UP + " --workers 1", aws_env, fresh).stdout
    assert f"revoke tcp/26379 from {workers} into inferq-workers" in out
    assert f"revoke tcp/26379 from {orchestrator} into inferq-orchestrator" in out
    assert "3 change(s); 2 instance(s) running" in out
    after = {g["GroupName"]: g for g in tagged(ec2)["groups"]}
    assert rules(after["inferq-workers"]) == {(22, ADMIN)}
    assert rules(after["inferq-orchestrator"]) == {(443, "0.0.0.0/0"), (22, ADMIN), (6379, workers)}


def test_ha_with_a_worker_group_keeps_worker_1_fixed_and_profiles_both_orchestrators(fresh, aws_env, ec2):
    out = run_command(UP + " --ha --workers 2 --min-workers 1 --max-workers 4", aws_env, fresh).stdout
    assert "create Auto Scaling group inferq-workers: 1 to 4 hosts, 2 now" in out
    inventory = json.loads((fresh / "state" / "inventory.json").read_text())
    # worker-1, the standby, is a host of its own beside the group: the group may replace any of its hosts.
    assert [h["name"] for h in inventory["hosts"]] == ["orchestrator", "orchestrator-2", "worker-1"]
    for host in inventory["hosts"][:2]:
        associations = ec2.describe_iam_instance_profile_associations(Filters=[
            {"Name": "instance-id", "Values": [host["instance_id"]]}])["IamInstanceProfileAssociations"]
        assert [a["IamInstanceProfile"]["Arn"].rsplit("/", 1)[1] for a in associations] == ["inferq-orchestrator"]
    assert "0 change(s)" in run_command(UP + " --ha --workers 2 --min-workers 1 --max-workers 4", aws_env,
                                        fresh).stdout
    run_command(DOWN, aws_env, fresh)
    assert tagged(ec2) == {"instances": [], "groups": [], "keys": [], "volumes": []}
