"""Provisioning: create (or find by tag) the key pair, the two security groups and the instances.

Every step looks its resource up by the cluster tag first, so a second run
creates nothing; with dry_run only read-only calls are made and the plan is
reported. Teardown deletes what carries the tag, and nothing else.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from inferq.deploy import inventory as inv
from inferq.deploy import settings
from inferq.deploy.aws import images, instances, keypairs, security_groups
from inferq.deploy.aws.security_groups import Rule
from inferq.deploy.aws.tags import tag_value

Report = Callable[[str], None]


@dataclass(frozen=True)
class Options:
    """What to provision (defaults in deploy.settings)."""

    cluster: str = settings.CLUSTER
    region: str = settings.REGION
    workers: int = settings.WORKERS
    orchestrator_type: str = settings.ORCHESTRATOR_TYPE
    worker_type: str = settings.WORKER_TYPE
    admin_cidr: str = ""
    api_cidr: str = settings.API_CIDR
    ami_owner: str = settings.AMI_OWNER
    ami_name: str = settings.AMI_NAME
    volume_gb: int = settings.ROOT_VOLUME_GB
    secrets_dir: str = settings.SECRETS_DIR
    inventory: str = settings.INVENTORY

    @property
    def key_file(self) -> Path:
        """Where the cluster's SSH private key is kept."""
        return Path(self.secrets_dir) / self.cluster / "ssh-key.pem"


def host_names(workers: int) -> list[tuple[str, str]]:
    """(role, name) of every instance: one orchestrator, then worker-1..N."""
    return [("orchestrator", "orchestrator")] + [("worker", f"worker-{i}") for i in range(1, workers + 1)]


def orchestrator_rules(options: Options, worker_group: str) -> list[Rule]:
    """Who may reach the orchestrator: the API from api_cidr, SSH and Flower from the admin, Redis from workers only."""
    return [
        Rule(settings.API_PORT, options.api_cidr, "inferq API"),
        Rule(settings.SSH_PORT, options.admin_cidr, "SSH from the admin"),
        Rule(settings.FLOWER_PORT, options.admin_cidr, "Flower from the admin"),
        Rule(settings.REDIS_PORT, worker_group, "Redis from the workers"),
    ]


def worker_rules(options: Options) -> list[Rule]:
    """Workers accept SSH from the admin and nothing else (they only connect out, to Redis)."""
    return [Rule(settings.SSH_PORT, options.admin_cidr, "SSH from the admin")]


def ensure_key(ec2, options: Options, dry_run: bool, report: Report) -> str:
    """The key pair's name, creating it (and saving its private key) if the cluster has none."""
    pair = keypairs.find(ec2, options.cluster)
    if pair:
        keypairs.check_private_key(pair, options.key_file)
        return pair["KeyName"]
    name = f"{options.cluster}-key"
    report(f"{'would create' if dry_run else 'create'} key pair {name} (private key to {options.key_file}, mode 600)")
    if not dry_run:
        keypairs.create(ec2, options.cluster, name, options.key_file)
    return name


def ensure_group(ec2, options: Options, role: str, vpc_id: str, dry_run: bool, report: Report) -> dict:
    """The security group for role, creating it empty if missing (a placeholder in a dry run)."""
    group = security_groups.find(ec2, options.cluster, role)
    if group:
        return group
    report(f"{'would create' if dry_run else 'create'} security group {options.cluster}-{role}")
    if dry_run:
        return {"GroupId": f"sg-<new {role}>", "GroupName": f"{options.cluster}-{role}", "IpPermissions": []}
    group_id = security_groups.create(ec2, options.cluster, role, vpc_id, f"inferq {role} ({options.cluster})")
    return {"GroupId": group_id, "GroupName": f"{options.cluster}-{role}", "IpPermissions": []}


def ensure_instances(ec2, options: Options, key_name: str, groups: dict, dry_run: bool, report: Report) -> list[str]:
    """Launch the instances the cluster lacks, start stopped ones; return every instance id."""
    existing = {tag_value(i, settings.NAME_TAG_KEY): i for i in instances.find(ec2, options.cluster)}
    wanted = host_names(options.workers)
    missing = [(role, name) for role, name in wanted if name not in existing]
    stopped = [i["InstanceId"] for i in existing.values() if i["State"]["Name"] in ("stopped", "stopping")]
    surplus = sorted(set(existing) - {name for _, name in wanted})
    if surplus:
        # Never terminate on `up`: fewer --workers than before is a decision for `down` or the console.
        report(f"note: instances beyond the asked-for {options.workers} workers are left running: {', '.join(surplus)}")
    image = images.latest_image(ec2, options.ami_owner, options.ami_name) if missing else None
    for role, name in missing:
        itype = options.orchestrator_type if role == "orchestrator" else options.worker_type
        verb = "would launch" if dry_run else "launch"
        report(f"{verb} {name} ({itype}, {image['ImageId']} {image.get('Name', '')})")
    if stopped:
        report(f"{'would start' if dry_run else 'start'} stopped instances {', '.join(stopped)}")
    if dry_run:
        return [i["InstanceId"] for i in existing.values()]
    ids = [i["InstanceId"] for i in existing.values()]
    for role, name in missing:
        itype = options.orchestrator_type if role == "orchestrator" else options.worker_type
        ids.append(instances.launch(ec2, options.cluster, role, name, image, itype, key_name,
                                    groups[role]["GroupId"], options.volume_gb))
    if stopped:
        instances.start(ec2, stopped)
    return ids


def up(ec2, options: Options, dry_run: bool, report: Report) -> int:
    """Create or find everything; write the inventory. Return the number of changes (planned, in a dry run)."""
    changes = []
    counting = lambda line: (changes.append(line), report(line))  # noqa: E731
    key_name = ensure_key(ec2, options, dry_run, counting)
    vpc_id = security_groups.default_vpc(ec2)
    groups = {
        "worker": ensure_group(ec2, options, "workers", vpc_id, dry_run, counting),
        "orchestrator": ensure_group(ec2, options, "orchestrator", vpc_id, dry_run, counting),
    }
    security_groups.converge(ec2, groups["worker"], worker_rules(options), dry_run, counting)
    security_groups.converge(ec2, groups["orchestrator"],
                             orchestrator_rules(options, groups["worker"]["GroupId"]), dry_run, counting)
    ids = ensure_instances(ec2, options, key_name, groups, dry_run, counting)
    if dry_run:
        report(f"dry run: {len(changes)} change(s) planned, nothing done")
        return len(changes)
    report(f"waiting for {len(ids)} instance(s) to run and pass their status checks (a few minutes on AWS)")
    instances.wait(ec2, ids, "running")
    # Running is not reachable: wait for EC2's status checks, by then sshd answers.
    instances.wait(ec2, ids, "status_ok")
    hosts = [host_of(i) for i in instances.describe(ec2, ids)]
    path = inv.write(inv.Inventory(cluster=options.cluster, hosts=sorted(hosts, key=host_order),
                                   key_file=str(options.key_file), region=options.region,
                                   containers_per_worker=settings.CONTAINERS_PER_WORKER), options.inventory)
    report(f"{len(changes)} change(s); {len(hosts)} instance(s) running; inventory written to {path}")
    return len(changes)


def host_of(instance: dict) -> inv.Host:
    """An inventory host from a described instance."""
    return inv.Host(name=tag_value(instance, settings.NAME_TAG_KEY), role=tag_value(instance, settings.ROLE_TAG_KEY),
                    instance_id=instance["InstanceId"], public_ip=instance.get("PublicIpAddress", ""),
                    private_ip=instance.get("PrivateIpAddress", ""))


def host_order(host: inv.Host) -> tuple:
    """Orchestrator first, then workers by number."""
    number = host.name.rpartition("-")[2]
    return (host.role != "orchestrator", int(number) if number.isdigit() else 0, host.name)


def down(ec2, options: Options, dry_run: bool, report: Report) -> int:
    """Delete the cluster's instances, security groups and key pair (found by tag). Return the count."""
    doomed = instances.find(ec2, options.cluster)
    groups = security_groups.find_all(ec2, options.cluster)
    pair = keypairs.find(ec2, options.cluster)
    verb = "would delete" if dry_run else "delete"
    for instance in doomed:
        report(f"{verb} instance {tag_value(instance, settings.NAME_TAG_KEY)} ({instance['InstanceId']})")
    for group in groups:
        report(f"{verb} security group {group['GroupName']} ({group['GroupId']})")
    if pair:
        report(f"{verb} key pair {pair['KeyName']}")
    count = len(doomed) + len(groups) + (1 if pair else 0)
    if dry_run:
        report(f"dry run: {count} resource(s) would be deleted, nothing done")
        return count
    if doomed:
        ids = [i["InstanceId"] for i in doomed]
        instances.terminate(ec2, ids)
        report(f"waiting for {len(ids)} instance(s) to terminate")
        # Groups in use by an instance cannot be deleted: wait until none is.
        instances.wait(ec2, ids, "terminated")
    for group in groups:
        security_groups.revoke_all(ec2, group)
    for group in groups:
        security_groups.delete(ec2, group)
    if pair:
        keypairs.delete(ec2, pair)
        options.key_file.unlink(missing_ok=True)
    report(f"deleted {count} resource(s) tagged {settings.TAG_KEY}={options.cluster}")
    return count
