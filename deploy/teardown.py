"""Teardown: delete the cluster's instances, security groups and key pair, found by tag in the cluster's region.

The region and cluster come from the inventory (deploy.target), so a cluster
made with `up --region eu-west-1` is found by a plain `down`. Before deleting
anything, the pre-flight checks the credentials and every delete (EC2 DryRun).
Afterwards the inventory is marked torn down, and the pinned host keys, the
API's certificate and the cluster's secrets go: the addresses may be someone
else's next, and a new cluster of the same name gets passwords of its own.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

from inferq.deploy import credentials, defaults, preflight, tls
from inferq.deploy import inventory as inv
from inferq.deploy.aws import instances, keypairs, security_groups
from inferq.deploy.aws.clients import Aws
from inferq.deploy.aws.tags import tag_value
from inferq.deploy.errors import AwsError
from inferq.deploy.options import Options
from inferq.deploy.provision import Report


def checks(aws: Aws, doomed: list[dict], groups: list[dict], pair: dict | None) -> preflight.Checks:
    """The DryRun requests of every delete."""
    ec2, todo = aws.ec2, preflight.Checks()
    if doomed:
        ids = [i["InstanceId"] for i in doomed]
        todo.add("ec2:TerminateInstances", "terminating the instances",
                 lambda: ec2.terminate_instances(InstanceIds=ids, DryRun=True))
    for group in groups:
        if group.get("IpPermissions"):
            todo.add("ec2:RevokeSecurityGroupIngress", f"revoking the rules of {group['GroupName']}",
                     partial(ec2.revoke_security_group_ingress, GroupId=group["GroupId"],
                             IpPermissions=group["IpPermissions"], DryRun=True))
        todo.add("ec2:DeleteSecurityGroup", f"deleting {group['GroupName']}",
                 partial(ec2.delete_security_group, GroupId=group["GroupId"], DryRun=True))
    if pair:
        todo.add("ec2:DeleteKeyPair", f"deleting key pair {pair['KeyName']}",
                 lambda: ec2.delete_key_pair(KeyName=pair["KeyName"], DryRun=True))
    return todo


def down(aws: Aws, options: Options, dry_run: bool, report: Report, keep_secrets: bool = False) -> int:
    """Delete the cluster's instances, security groups and key pair (found by tag). Return the count."""
    ec2 = aws.ec2
    arn = preflight.identity(aws)
    doomed = instances.find(ec2, options.cluster)
    groups = security_groups.find_all(ec2, options.cluster)
    pair = keypairs.find(ec2, options.cluster)
    from inferq.deploy import autoscaling

    # The worker group, its template and the IAM roles (deploy.autoscaling); nothing if it was never made.
    scaling = autoscaling.connect(aws.region, aws.sts)
    try:
        scaled = autoscaling.found_resources(ec2, scaling, options.cluster)
    except AwsError as exc:
        if "AccessDenied" not in str(exc) and "UnauthorizedOperation" not in str(exc):
            raise
        # Credentials for a fixed cluster need no IAM or Auto Scaling rights: say what could not be looked at.
        report(f"note: could not look for the worker group, its template and roles ({exc}); a cluster made with "
               "--min-workers/--max-workers needs autoscaling:Describe* and iam:GetRole to be torn down")
        scaled = []
    count = len(doomed) + len(groups) + (1 if pair else 0) + len(scaled)
    if count:
        preflight.require(aws, arn, checks(aws, doomed, groups, pair), report, verb="deleted")
    verb = "would delete" if dry_run else "delete"
    for kind, name in scaled:
        report(f"{verb} {kind} {name}")
    for instance in doomed:
        report(f"{verb} instance {tag_value(instance, defaults.NAME_TAG_KEY)} ({instance['InstanceId']})")
    for group in groups:
        report(f"{verb} security group {group['GroupName']} ({group['GroupId']})")
    if pair:
        report(f"{verb} key pair {pair['KeyName']}")
    where = f"tagged {defaults.TAG_KEY}={options.cluster} in {aws.region}"
    if dry_run:
        report(f"dry run: {count} resource(s) {where} would be deleted, nothing done")
        return count
    if scaled:
        # The group first: it would replace the hosts terminated below.
        autoscaling.down(ec2, scaling, options.cluster, scaled, report)
    if doomed:
        ids = [i["InstanceId"] for i in doomed]
        for instance in doomed:
            # The orchestrator is protected against a stray TerminateInstances; this one is meant.
            if instances.protected(ec2, instance["InstanceId"]):
                instances.protect(ec2, instance["InstanceId"], False)
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
    forget(options, keep_secrets)
    report(f"deleted {count} resource(s) {where}")
    if keep_secrets:
        report(f"kept the cluster's secrets ({credentials.path_of(options.secrets_dir, options.cluster)}): a new "
               "cluster of this name will use the same passwords and keys")
    return count


def forget(options: Options, keep_secrets: bool = False) -> None:
    """What this machine kept about the cluster's hosts: the SSH key, the pins, the API certificate and (unless
    keep_secrets) its passwords and keys, so a new cluster of the same name gets new ones. The inventory stays,
    marked torn down (its env and runtime_options kept), so fab refuses it and a later `down` knows the region."""
    options.key_file.unlink(missing_ok=True)
    options.known_hosts.unlink(missing_ok=True)
    tls.forget(options.secrets_dir, options.cluster)
    tls.forget_ca(options.secrets_dir, options.cluster)
    if not keep_secrets:
        credentials.forget(options.secrets_dir, options.cluster)
    path = Path(options.inventory)
    if path.exists():
        inv.merge(path, cluster=options.cluster, hosts=[], key_file=str(options.key_file), region=options.region,
                  state=inv.TORN_DOWN, launch_tokens={}, autoscaling={})
