"""vCPUs: what instance types need, what the region already runs, and the account's quota (Service Quotas)."""
from __future__ import annotations

import re

from inferq.deploy.defaults import VCPU_QUOTA_CODE
from inferq.deploy.errors import aws_call

STANDARD_LETTERS = "acdhimrtz"
"""Families whose On-Demand instances count against the standard vCPU quota (A, C, D, H, I, M, R, T, Z)."""

OTHER_FAMILIES = ("inf", "dl", "trn", "hpc", "mac")
"""Families starting with one of those letters that have quotas of their own."""


def standard(instance_type: str) -> bool:
    """Whether an instance type counts against the standard On-Demand vCPU quota."""
    family = re.match(r"[a-z]+", instance_type)
    letters = family.group(0) if family else ""
    return bool(letters) and letters[0] in STANDARD_LETTERS and not letters.startswith(OTHER_FAMILIES)


def vcpus(ec2, instance_types: set[str]) -> dict[str, int]:
    """Default vCPUs of each instance type (an unknown type is an AWS error naming it)."""
    if not instance_types:
        return {}
    with aws_call(f"looking up instance types {', '.join(sorted(instance_types))}"):
        found = ec2.describe_instance_types(InstanceTypes=sorted(instance_types))["InstanceTypes"]
    return {t["InstanceType"]: t["VCpuInfo"]["DefaultVCpus"] for t in found}


def in_use(ec2) -> int:
    """vCPUs of the region's pending and running standard instances (every instance of the account there)."""
    with aws_call("describing the region's running instances"):
        pages = ec2.get_paginator("describe_instances").paginate(
            Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}])
        types = [i["InstanceType"] for page in pages for r in page["Reservations"] for i in r["Instances"]]
    counted = [t for t in types if standard(t)]
    sizes = vcpus(ec2, set(counted))
    return sum(sizes[t] for t in counted)


def quota(quotas) -> tuple[float | None, str]:
    """The account's standard On-Demand vCPU quota here, or (None, why it could not be read)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        reply = quotas.get_service_quota(ServiceCode="ec2", QuotaCode=VCPU_QUOTA_CODE)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        return None, f"Service Quotas answered {error.get('Code')} for ec2/{VCPU_QUOTA_CODE}"
    except BotoCoreError as exc:
        return None, f"Service Quotas unreachable ({type(exc).__name__})"
    return float(reply["Quota"]["Value"]), ""


def shortfall(limit: float, used: int, needed: int) -> bool:
    """Whether launching needed more vCPUs would pass the quota."""
    return used + needed > limit
