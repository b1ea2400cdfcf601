"""The AWS clients provisioning uses: one boto3 session, one region, checked before any call."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from inferq.deploy.defaults import AWS_MAX_ATTEMPTS
from inferq.deploy.errors import DeployError


@dataclass(frozen=True)
class Aws:
    """EC2, STS (who am I) and Service Quotas (the vCPU quota) clients of one region."""

    ec2: Any
    sts: Any
    quotas: Any
    region: str


def regions(session) -> set[str]:
    """Every region botocore knows for EC2, in every partition (from its own data: no call is made)."""
    return {r for p in session.get_available_partitions() for r in session.get_available_regions("ec2", p)}


def connect(region: str) -> Aws:
    """Clients of region; an unknown region or no credentials at all is a one-line DeployError."""
    import boto3

    session = boto3.session.Session()
    known = regions(session)
    if region not in known:
        near = sorted(r for r in known if r.split("-")[0] == region.split("-")[0]) or sorted(known)[:6]
        raise DeployError(f"{region!r} is not an EC2 region; pass --region with one such as {', '.join(near[:6])}")
    if session.get_credentials() is None:
        raise DeployError("no AWS credentials found: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and "
                          "AWS_SECRET_ACCESS_KEY (nothing was created)")
    from botocore.config import Config

    # "standard" retries throttling and transient errors with backoff (the legacy default retries fewer of them);
    # RunInstances carries a ClientToken, so a retried launch never makes a second instance.
    config = Config(retries={"mode": "standard", "total_max_attempts": AWS_MAX_ATTEMPTS})
    return Aws(session.client("ec2", region_name=region, config=config),
               session.client("sts", region_name=region, config=config),
               session.client("service-quotas", region_name=region, config=config), region)


def default_region() -> str | None:
    """The region boto3 would use (AWS_DEFAULT_REGION, the profile's), if any."""
    import boto3

    return boto3.session.Session().region_name
