"""Provisioning: create (or find by tag) the key pair, the two security groups and the instances.

Every step looks its resource up by the cluster tag first, so a second run
creates nothing. Before the first change, a pre-flight (deploy.preflight)
checks the credentials, every permission (EC2 DryRun) and the vCPU quota, and
the inventory is written as "provisioning" with its region, so `down` finds
whatever a failure leaves (all of it tagged at creation). With dry_run only
read-only calls are made and the plan is reported. Teardown is deploy.teardown.

The layout: one orchestrator and worker-1..N; with --ha (Options.ha) two
orchestrators (defaults.HA_ORCHESTRATORS: the first starts as Redis's primary,
the second runs a replica, both the API and a Sentinel) and worker-1..N, the
first of which (inventory.Inventory.standby) also runs the third Sentinel and a
second replica. Both orchestrators are launched alike (type, AMI, user data,
termination protection, the group's instance profile) and their security
group lets Redis and Sentinel through between the hosts that run them
(ha_orchestrator_rules, ha_worker_rules).
"""
from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path

from inferq.deploy import autoscaling, defaults, host_keys, preflight, tls
from inferq.deploy import inventory as inv
from inferq.deploy.aws import instances, keypairs, quotas, security_groups
from inferq.deploy.aws.clients import Aws
from inferq.deploy.aws.security_groups import Rule
from inferq.deploy.aws.tags import tag_spec, tag_value
from inferq.deploy.defaults import HOST_KEY_POLL_SECONDS, HOST_KEY_WAIT_SECONDS
from inferq.deploy.errors import DeployError
from inferq.deploy.options import Options
from inferq.deploy.survey import ROLES, Survey, i_role, survey

Report = Callable[[str], None]


def orchestrator_rules(options: Options, worker_group: str) -> list[Rule]:
    """Who may reach the orchestrator: the API (TLS) from api_cidr, SSH from the admin, Redis from workers only."""
    return [
        Rule(defaults.HTTPS_PORT, options.api_cidr, "inferq API (TLS)"),
        Rule(defaults.SSH_PORT, options.admin_cidr, "SSH from the admin"),
        Rule(defaults.REDIS_PORT, worker_group, "Redis from the workers"),
    ]


def worker_rules(options: Options) -> list[Rule]:
    """Workers accept SSH from the admin and nothing else (they only connect out, to Redis)."""
    return [Rule(defaults.SSH_PORT, options.admin_cidr, "SSH from the admin")]


def ha_orchestrator_rules(orchestrator_group: str, worker_group: str) -> list[Rule]:
    """What --ha adds to the orchestrator group: Redis and Sentinel between the two orchestrators (a rule naming the
    group itself: replication, and the Sentinels talking to each other and to both Redises), and Sentinel from the
    workers (clients ask a Sentinel where the primary is; the standby worker host's Sentinel and replica too)."""
    return [
        Rule(defaults.REDIS_PORT, orchestrator_group, "Redis between the orchestrators (--ha)"),
        Rule(defaults.SENTINEL_PORT, orchestrator_group, "Sentinel between the orchestrators (--ha)"),
        Rule(defaults.SENTINEL_PORT, worker_group, "Sentinel from the workers (--ha)"),
    ]


def ha_worker_rules(orchestrator_group: str, worker_group: str) -> list[Rule]:
    """What --ha adds to the workers group, for the standby worker host's Redis replica and Sentinel: both reached
    from the orchestrators' Sentinels (and a promoted primary's replication), and from the workers group itself (the
    standby's own Sentinel is in it). Every worker host gets the rules; only the standby listens on those ports."""
    return [
        Rule(defaults.REDIS_PORT, orchestrator_group, "Redis on the standby from the orchestrators (--ha)"),
        Rule(defaults.SENTINEL_PORT, orchestrator_group, "Sentinel on the standby from the orchestrators (--ha)"),
        Rule(defaults.REDIS_PORT, worker_group, "Redis on the standby from the workers (--ha)"),
        Rule(defaults.SENTINEL_PORT, worker_group, "Sentinel on the standby from the workers (--ha)"),
    ]


def converge_groups(ec2, options: Options, groups: dict[str, dict], dry_run: bool, report: Report) -> None:
    """Bring both groups' rules to exactly the layout's list (security_groups.converge revokes any rule not in it:
    one added by hand, the --ha rules on a single-layout cluster); the workers' first, as before --ha."""
    orchestrator_id, worker_id = groups["orchestrator"]["GroupId"], groups["workers"]["GroupId"]
    for_workers, for_orchestrator = worker_rules(options), orchestrator_rules(options, worker_id)
    if options.ha:
        for_workers += ha_worker_rules(orchestrator_id, worker_id)
        for_orchestrator += ha_orchestrator_rules(orchestrator_id, worker_id)
    security_groups.converge(ec2, groups["workers"], for_workers, dry_run, report)
    security_groups.converge(ec2, groups["orchestrator"], for_orchestrator, dry_run, report)


HA_NEEDS_A_WORKER = ("--ha needs at least one fixed worker host: worker-1 runs the third Sentinel and Redis's second "
                     "replica; pass --workers 1 or more")


def refuse_leaving_ha(options: Options, found: Survey) -> None:
    """Without --ha, refuse a cluster that has the --ha layout, before any change (and in a dry run too).

    The cluster has it when its inventory says so or its tagged instances hold an orchestrator other than
    `orchestrator`. `up` does not go back to one orchestrator: the second one holds a Redis replica and a Sentinel,
    worker-1 another pair, and with one orchestrator nothing would configure or watch them (a stranded replica,
    Sentinels that may still promote it). Pass --ha to keep the layout; `down` ends it.
    """
    if options.ha:
        return
    extra = sorted(name for name, i in found.instances.items()
                   if i_role(i) == "orchestrator" and name not in options.orchestrator_names)
    recorded = found.recorded is not None and found.recorded.ha
    if extra or recorded:
        where = f"its instances include {', '.join(extra)}" if extra else f"{options.inventory} lists two"
        raise DeployError(f"cluster {options.cluster} has two orchestrators (the --ha layout: {where}); `up` without "
                          "--ha would leave the second one's Redis replica and the Sentinels stranded: pass --ha to "
                          "keep the layout, or run `inferq-provision down` first; nothing was changed")


def checks(aws: Aws, options: Options, found: Survey) -> preflight.Checks:
    """The DryRun requests of every change `up` would make."""
    ec2, todo = aws.ec2, preflight.Checks()
    if found.key is None:
        todo.add("ec2:CreateKeyPair", "creating the key pair", lambda: ec2.create_key_pair(
            KeyName=f"{options.cluster}-key", KeyType="ed25519", DryRun=True,
            TagSpecifications=tag_spec("key-pair", options.cluster, "key", "key")))
    for role, group in found.groups.items():
        if group is None:
            todo.add("ec2:CreateSecurityGroup", f"creating the {role} security group", partial(
                ec2.create_security_group, GroupName=f"{options.cluster}-{role}", Description="inferq pre-flight",
                VpcId=found.vpc_id, DryRun=True,
                TagSpecifications=tag_spec("security-group", options.cluster, role, role)))
    # Rules go onto the cluster's groups, or (not made yet) onto the VPC's default group in this dry run; the
    # rule is one no group has (TEST-NET-1, port 9), so the answer is about the permission, not a duplicate.
    target = next((g["GroupId"] for g in found.groups.values() if g), None) or security_groups.default_group(
        ec2, found.vpc_id)
    rule = Rule(9, "192.0.2.1/32", "inferq pre-flight").permission()
    todo.add("ec2:AuthorizeSecurityGroupIngress", "allowing ingress", lambda: ec2.authorize_security_group_ingress(
        GroupId=target, IpPermissions=[rule], DryRun=True))
    for role in sorted({role for role, _ in found.missing}):
        request = instances.launch_request(options.cluster, role, f"{role}-preflight", found.images[role],
                                           options.instance_type(role), options.volume_gb,
                                           key_name=found.key["KeyName"] if found.key else "")
        todo.add("ec2:RunInstances", f"launching {options.instance_type(role)} instances",
                 partial(ec2.run_instances, **request, DryRun=True))
    if found.stopped:
        todo.add("ec2:StartInstances", "starting stopped instances",
                 lambda: ec2.start_instances(InstanceIds=found.stopped, DryRun=True))
    return todo


def vcpus_needed(ec2, options: Options, found: Survey) -> int:
    """vCPUs the instances `up` would launch or start take from the quota."""
    types = [options.instance_type(role) for role, _ in found.missing]
    types += [i["InstanceType"] for i in found.instances.values() if i["InstanceId"] in found.stopped]
    types = [t for t in types if quotas.standard(t)]
    sizes = quotas.vcpus(ec2, set(types))
    return sum(sizes[t] for t in types)


def ensure_key(ec2, options: Options, found: Survey, dry_run: bool, report: Report) -> str:
    """The key pair's name, creating it (and saving its private key) if the cluster has none."""
    if found.key:
        keypairs.check_private_key(found.key, options.key_file)
        return found.key["KeyName"]
    name = f"{options.cluster}-key"
    report(f"{'would create' if dry_run else 'create'} key pair {name} (private key to {options.key_file}, mode 600)")
    if not dry_run:
        keypairs.create(ec2, options.cluster, name, options.key_file)
    return name


def ensure_group(ec2, options: Options, role: str, found: Survey, dry_run: bool, report: Report) -> dict:
    """The security group for role, creating it empty if missing (a placeholder in a dry run)."""
    group = found.groups[role]
    if group:
        return group
    report(f"{'would create' if dry_run else 'create'} security group {options.cluster}-{role}")
    if dry_run:
        return {"GroupId": f"sg-<new {role}>", "GroupName": f"{options.cluster}-{role}", "IpPermissions": []}
    group_id = security_groups.create(ec2, options.cluster, role, found.vpc_id, f"inferq {role} ({options.cluster})")
    return {"GroupId": group_id, "GroupName": f"{options.cluster}-{role}", "IpPermissions": []}


def ensure_instances(ec2, options: Options, found: Survey, key_name: str, groups: dict, dry_run: bool,
                     report: Report) -> list[str]:
    """Launch the instances the cluster lacks (IMDSv2, encrypted, a host key of their own), start stopped ones."""
    if found.surplus:
        # Never terminate on `up`: fewer --workers than before is a decision for `down` or the console.
        report(f"note: instances beyond the asked-for {options.workers} workers are left running: "
               f"{', '.join(found.surplus)}")
    for role, name in found.missing:
        image = found.images[role]
        verb = "would launch" if dry_run else "launch"
        report(f"{verb} {name} ({options.instance_type(role)}, {image['ImageId']} {image.get('Name', '')}; "
               "IMDSv2 required, root volume encrypted)")
    if found.stopped:
        report(f"{'would start' if dry_run else 'start'} stopped instances {', '.join(found.stopped)}")
    for name, instance in sorted(found.instances.items()):
        if instance.get("MetadataOptions", {}).get("HttpTokens") != "required":
            report(f"{'would require' if dry_run else 'require'} IMDSv2 on {name}")
            if not dry_run:
                instances.require_imdsv2(ec2, instance, name)
        if tag_value(instance, defaults.ROLE_TAG_KEY) == "orchestrator" and \
                not instances.protected(ec2, instance["InstanceId"]):
            report(f"{'would protect' if dry_run else 'protect'} {name} from termination")
            if not dry_run:
                instances.protect(ec2, instance["InstanceId"], True)
                found.protected.append(instance["InstanceId"])
    ids = [i["InstanceId"] for i in found.instances.values()]
    if dry_run:
        return ids
    tokens = launch_tokens(options, found)
    for role, name in found.missing:
        request = instances.launch_request(options.cluster, role, name, found.images[role],
                                           options.instance_type(role), options.volume_gb, host_keys.user_data(),
                                           key_name, groups[ROLES[role]]["GroupId"], tokens[name])
        ids.append(instances.launch(ec2, request, name))
    if found.stopped:
        instances.start(ec2, found.stopped)
    return ids


def launch_tokens(options: Options, found: Survey) -> dict[str, str]:
    """A ClientToken per instance to launch, recorded in the inventory before the launch.

    A retried RunInstances with the same token returns the instance the first
    one made instead of a second one: botocore's own retries, and an `up`
    rerun after a crash before the new instance shows in DescribeInstances.
    """
    recorded = found.recorded.launch_tokens if found.recorded else {}
    tokens = {name: recorded.get(name) or f"{options.cluster}-{name}-{uuid.uuid4().hex[:16]}"
              for _, name in found.missing}
    inv.merge(options.inventory, launch_tokens=tokens)
    return tokens


def up(aws: Aws, options: Options, dry_run: bool, report: Report, host_key_wait: float = HOST_KEY_WAIT_SECONDS) -> int:
    """Pre-flight, then create or find everything; write the inventory. Return the number of changes."""
    ec2 = aws.ec2
    if options.ha and options.workers < 1:
        raise DeployError(HA_NEEDS_A_WORKER)  # before any AWS call: nothing to look up to know it
    arn = preflight.identity(aws)  # first: with refused credentials, every later call would fail obscurely
    found = survey(ec2, options)
    refuse_leaving_ha(options, found)
    preflight.require(aws, arn, checks(aws, options, found), report)
    group_vcpus = 0
    if options.autoscale and quotas.standard(options.worker_type):
        # The group may grow to its maximum without asking: the quota must allow it now.
        group_vcpus = options.autoscale.max_hosts * quotas.vcpus(ec2, {options.worker_type})[options.worker_type]
    preflight.require_vcpus(aws, vcpus_needed(ec2, options, found) + group_vcpus, report)
    changes: list[str] = []

    def counting(line: str) -> None:
        changes.append(line)
        report(line)

    if not dry_run:
        mark_provisioning(options)
        # The cluster's own CA, which signs Redis's certificate at deploy (Redis speaks TLS between hosts).
        if not tls.ca_paths(options.secrets_dir, options.cluster)[0].exists():
            tls.load_or_create_ca(options.secrets_dir, options.cluster)
            report(f"made the cluster's CA ({tls.ca_paths(options.secrets_dir, options.cluster)[0]}; key mode 600)")
    key_name = ensure_key(ec2, options, found, dry_run, counting)
    groups = {role: ensure_group(ec2, options, role, found, dry_run, counting) for role in ("workers", "orchestrator")}
    converge_groups(ec2, options, groups, dry_run, counting)
    ids = ensure_instances(ec2, options, found, key_name, groups, dry_run, counting)
    scaling = None
    if options.autoscale:
        scaling = autoscaling.connect(aws.region, aws.sts)
        autoscaling.up(ec2, scaling, options.cluster, options.autoscale, found.images["worker"], options.worker_type,
                       options.volume_gb, key_name, groups["workers"]["GroupId"], found.vpc_id, counting, dry_run)
    if dry_run:
        report(f"dry run: {len(changes)} change(s) planned, nothing done")
        return len(changes)
    report(f"waiting for {len(ids)} instance(s) to run and pass their status checks (a few minutes on AWS)")
    instances.wait(ec2, ids, "running")
    # Running is not reachable: wait for EC2's status checks, by then sshd answers.
    instances.wait(ec2, ids, "status_ok")
    described = instances.describe(ec2, ids)
    for instance in described:
        # Launched with DisableApiTermination; checked anyway (moto, for one, ignores it at launch).
        if tag_value(instance, defaults.ROLE_TAG_KEY) == "orchestrator" and \
                instance["InstanceId"] not in found.protected and not instances.protected(ec2, instance["InstanceId"]):
            instances.protect(ec2, instance["InstanceId"], True)
    for volume in instances.unencrypted_volumes(ec2, ids):
        report(f"note: volume {volume} was made before inferq encrypted root volumes; only `down` and `up` "
               "replace it")
    hosts = sorted((host_of(i) for i in described), key=host_order)
    if scaling:
        for host in hosts:
            if host.role == "orchestrator":
                autoscaling.associate_orchestrator_profile(ec2, autoscaling.Names(options.cluster),
                                                           host.instance_id, counting)
    pins, unpinned = pin_host_keys(ec2, options, hosts, host_key_wait, report)
    path = Path(options.inventory)
    group = {}
    if scaling:
        names = autoscaling.Names(options.cluster)
        group = {"group": names.group, "hook": names.hook, "bucket": names.bucket(scaling.account, scaling.region),
                 "region": scaling.region}
    inv.merge(path, cluster=options.cluster, hosts=hosts, key_file=str(options.key_file), region=options.region,
              known_hosts=str(pins), state=inv.READY, amis=found.amis(), launch_tokens={}, autoscaling=group,
              **({} if found.recorded else {"containers_per_worker": defaults.CONTAINERS_PER_WORKER}))
    report(f"{len(changes)} change(s); {len(hosts)} instance(s) running; inventory written to {path}, "
           f"host keys pinned in {pins}")
    if unpinned:
        report(f"not pinned yet: {', '.join(unpinned)} printed no SSH host key on the console within "
               f"{host_key_wait:g}s (cloud-init does at first boot); fab refuses them until `inferq-provision up` "
               "runs again and pins them")
    return len(changes)


def pin_host_keys(ec2, options: Options, hosts: list[inv.Host], wait: float,
                  report: Report) -> tuple[Path, list[str]]:
    """Pin each host's keys as its console shows them (waiting up to `wait` for silent ones); keep older pins.

    Returns the known_hosts file and the hosts that still have no pin.
    """
    earlier = host_keys.read_known_hosts(options.known_hosts)
    keys: dict[str, list[str]] = {}
    deadline = time.monotonic() + wait
    while True:
        for host in hosts:
            if not keys.get(host.name):
                keys[host.name] = host_keys.keys_in_console(instances.console_output(ec2, host.instance_id))
        silent = [h.name for h in hosts if not keys[h.name]]
        if not silent or time.monotonic() + HOST_KEY_POLL_SECONDS > deadline:
            break
        report(f"waiting for {', '.join(silent)} to print SSH host keys on the console")
        time.sleep(HOST_KEY_POLL_SECONDS)
    entries, unpinned = [], []
    for host in hosts:
        # The console is the authority; a pin made before stays when the console no longer shows the keys
        # (AWS keeps only its last 64 KB).
        found = keys[host.name] or earlier.get(host_keys.host_pattern(host.public_ip, host.ssh_port), [])
        entries += [(host.public_ip, host.ssh_port, key) for key in found]
        if not found:
            unpinned.append(host.name)
    return host_keys.write_known_hosts(options.known_hosts, entries), unpinned


def mark_provisioning(options: Options) -> None:
    """Before the first change: an inventory naming the cluster and region, unless a complete one does already.

    Merged, never rewritten: the operator's env and runtime_options stay.
    """
    path = Path(options.inventory)
    if path.exists() and inv.read(path).state == inv.READY:
        return
    inv.merge(path, cluster=options.cluster, key_file=str(options.key_file), region=options.region,
              state=inv.PROVISIONING, known_hosts=str(options.known_hosts), hosts=[])


def host_of(instance: dict) -> inv.Host:
    """An inventory host from a described instance."""
    role = tag_value(instance, defaults.ROLE_TAG_KEY) or ""
    return inv.Host(name=tag_value(instance, defaults.NAME_TAG_KEY) or "", role=role,
                    instance_id=instance["InstanceId"], public_ip=instance.get("PublicIpAddress", ""),
                    private_ip=instance.get("PrivateIpAddress", ""),
                    ssh_user=defaults.ORCHESTRATOR_SSH_USER if role == "orchestrator" else defaults.SSH_USER)


def host_order(host: inv.Host) -> tuple:
    """Orchestrators first (orchestrator, then orchestrator-2), then workers by number."""
    number = host.name.rpartition("-")[2]
    return (host.role != "orchestrator", int(number) if number.isdigit() else 0, host.name)
