"""Security groups and their ingress rules, converged to exactly the rules asked for."""
from __future__ import annotations

from typing import NamedTuple

from inferq.deploy.aws.tags import cluster_filter, tag_spec
from inferq.deploy.errors import DeployError, aws_call
from inferq.deploy.retry import eventually


class Rule(NamedTuple):
    """One TCP ingress rule: a port and where from (a CIDR, or a security group id)."""

    port: int
    source: str
    what: str = ""

    def key(self) -> tuple[int, str]:
        return self.port, self.source

    def permission(self) -> dict:
        """The rule as an EC2 IpPermission."""
        perm = {"IpProtocol": "tcp", "FromPort": self.port, "ToPort": self.port}
        if self.source.startswith("sg-"):
            perm["UserIdGroupPairs"] = [{"GroupId": self.source, "Description": self.what}]
        elif ":" in self.source:
            perm["Ipv6Ranges"] = [{"CidrIpv6": self.source, "Description": self.what}]
        else:
            perm["IpRanges"] = [{"CidrIp": self.source, "Description": self.what}]
        return perm


def default_vpc(ec2) -> str:
    """The region's default VPC, where the groups and instances go."""
    with aws_call("looking up the default VPC"):
        vpcs = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
    if not vpcs:
        raise DeployError("this region has no default VPC; create one with `aws ec2 create-default-vpc`")
    return vpcs[0]["VpcId"]


def default_group(ec2, vpc_id: str) -> str:
    """The id of the VPC's own default group (the pre-flight dry-runs rules against it)."""
    with aws_call("looking up the VPC's default security group"):
        groups = ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc_id]},
                                                       {"Name": "group-name", "Values": ["default"]}])
    return groups["SecurityGroups"][0]["GroupId"]


def find(ec2, cluster: str, role: str) -> dict | None:
    """The cluster's security group for role, found by tag."""
    with aws_call(f"describing the {role} security group"):
        groups = ec2.describe_security_groups(Filters=cluster_filter(cluster, role=role))["SecurityGroups"]
    return groups[0] if groups else None


def find_all(ec2, cluster: str) -> list[dict]:
    """Every security group carrying the cluster's tag."""
    with aws_call("describing security groups"):
        return ec2.describe_security_groups(Filters=cluster_filter(cluster))["SecurityGroups"]


def create(ec2, cluster: str, role: str, vpc_id: str, description: str) -> str:
    """Create an empty (ingress-less) tagged group; return its id."""
    with aws_call(f"creating the {role} security group"):
        return ec2.create_security_group(
            GroupName=f"{cluster}-{role}", Description=description, VpcId=vpc_id,
            TagSpecifications=tag_spec("security-group", cluster, role, role),
        )["GroupId"]


def rules_of(group: dict) -> set[tuple[int, str]]:
    """The (port, source) pairs a described group lets in over TCP."""
    found = set()
    for perm in group.get("IpPermissions", []):
        if perm.get("IpProtocol") != "tcp" or perm.get("FromPort") != perm.get("ToPort"):
            # Anything wider than one TCP port is not ours: report it as a rule to revoke.
            found.add((-1, repr(sorted(perm.items()))))
            continue
        found |= {(perm["FromPort"], r["CidrIp"]) for r in perm.get("IpRanges", [])}
        # IPv6 too: a hand-added ::/0 would otherwise open the port to the whole IPv6 Internet unnoticed.
        found |= {(perm["FromPort"], r["CidrIpv6"]) for r in perm.get("Ipv6Ranges", [])}
        found |= {(perm["FromPort"], p["GroupId"]) for p in perm.get("UserIdGroupPairs", [])}
    return found


def converge(ec2, group: dict, wanted: list[Rule], dry_run: bool, report) -> int:
    """Authorize missing rules and revoke unwanted ones; return how many changes were (or would be) made."""
    have = rules_of(group)
    want = {rule.key(): rule for rule in wanted}
    missing = [rule for key, rule in want.items() if key not in have]
    extra = [key for key in have if key not in want]
    name = group.get("GroupName", group["GroupId"])
    for rule in missing:
        report(f"{'would allow' if dry_run else 'allow'} tcp/{rule.port} from {rule.source} into {name} ({rule.what})")
    for port, source in extra:
        report(f"{'would revoke' if dry_run else 'revoke'} tcp/{port} from {source} into {name}")
    if dry_run:
        return len(missing) + len(extra)
    if missing:
        with aws_call(f"authorizing ingress on {name}"):
            # A group created a moment ago may not be visible to this call yet.
            eventually(f"authorizing ingress on {name}", lambda: ec2.authorize_security_group_ingress(
                GroupId=group["GroupId"], IpPermissions=[r.permission() for r in missing]), "InvalidGroup.NotFound")
    revoke = described_permissions(group, set(extra))
    if revoke:
        with aws_call(f"revoking ingress on {name}"):
            ec2.revoke_security_group_ingress(GroupId=group["GroupId"], IpPermissions=revoke)
    if any(port == -1 for port, _ in extra):
        raise DeployError(f"{name} has a rule wider than one TCP port that inferq did not create; remove it by hand")
    return len(missing) + len(extra)


SOURCES = (("IpRanges", "CidrIp"), ("Ipv6Ranges", "CidrIpv6"), ("UserIdGroupPairs", "GroupId"))
"""Where an IpPermission names its sources, and each source's key."""


def described_permissions(group: dict, keys: set[tuple[int, str]]) -> list[dict]:
    """The group's one-port TCP rules behind these (port, source) keys, each exactly as EC2 described it.

    Revoked as described, description included: EC2 ignores a description on revoke, but moto matches a group
    pair (another group's, or the group's own under --ha) only with it, and a rule that is not found fails the call.
    """
    found = []
    for perm in group.get("IpPermissions", []):
        if perm.get("IpProtocol") != "tcp" or perm.get("FromPort") != perm.get("ToPort"):
            continue  # not ours to revoke (converge refuses it)
        port = perm["FromPort"]
        found += [{"IpProtocol": "tcp", "FromPort": port, "ToPort": port, field: [source]}
                  for field, key in SOURCES for source in perm.get(field, []) if (port, source[key]) in keys]
    return found


def revoke_all(ec2, group: dict) -> None:
    """Drop every ingress rule (the orchestrator's references the worker group, which blocks deleting it)."""
    if group.get("IpPermissions"):
        with aws_call(f"revoking ingress on {group['GroupName']}"):
            ec2.revoke_security_group_ingress(GroupId=group["GroupId"], IpPermissions=group["IpPermissions"])


def delete(ec2, group: dict) -> None:
    """Delete a security group, waiting out the interfaces of terminated instances that still hold it."""
    what = f"deleting security group {group['GroupName']}"
    with aws_call(what):
        eventually(what, lambda: ec2.delete_security_group(GroupId=group["GroupId"]), "DependencyViolation")
