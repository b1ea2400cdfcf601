"""Before anything is created or deleted: the credentials work, they may do each step (EC2 DryRun), the vCPUs fit.

Everything here is read-only: a DryRun request is answered DryRunOperation
when it would have been allowed, UnauthorizedOperation when not. What is
missing is said in one line, before the first resource exists.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from inferq.deploy.aws import quotas
from inferq.deploy.aws.clients import Aws
from inferq.deploy.defaults import VCPU_QUOTA_CODE
from inferq.deploy.errors import DeployError

Report = Callable[[str], None]

DENIED = ("UnauthorizedOperation", "AccessDenied", "AccessDeniedException")
"""Error codes meaning "these credentials may not": EC2's, and IAM's (which moto answers with)."""

REFUSED_CREDENTIALS = ("InvalidClientTokenId", "SignatureDoesNotMatch", "ExpiredToken", "AuthFailure",
                       "UnrecognizedClientException", "InvalidAccessKeyId")


@dataclass
class Checks:
    """The calls a command will make, each as a DryRun request: (IAM action, what for, call)."""

    calls: list[tuple[str, str, Callable[[], object]]] = field(default_factory=list)

    def add(self, action: str, what: str, call: Callable[[], object]) -> None:
        self.calls.append((action, what, call))


def identity(aws: Aws) -> str:
    """Whose credentials these are (their ARN); refused or missing credentials are one line."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    try:
        return aws.sts.get_caller_identity()["Arn"]
    except NoCredentialsError:
        raise DeployError("no AWS credentials found: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and "
                          "AWS_SECRET_ACCESS_KEY (nothing was created)") from None
    except ClientError as exc:
        error = exc.response.get("Error", {})
        if error.get("Code") in REFUSED_CREDENTIALS:
            raise DeployError(f"AWS refuses these credentials ({error.get('Code')}): check AWS_PROFILE or "
                              "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (nothing was created)") from None
        raise DeployError(f"asking AWS who these credentials are failed: {error.get('Code')}: "
                          f"{error.get('Message', '')}") from None
    except BotoCoreError as exc:
        raise DeployError(f"cannot reach AWS in {aws.region}: {exc}") from None


def permitted(checks: Checks) -> tuple[list[str], list[str]]:
    """Run every DryRun call: (actions allowed, "action (what)" refused); any other answer is a DeployError."""
    from botocore.exceptions import ClientError

    allowed, refused = [], []
    for action, what, call in checks.calls:
        try:
            call()
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = error.get("Code")
            if code == "DryRunOperation":
                allowed.append(action)
                continue
            if code in DENIED:
                refused.append(f"{action} ({what})")
                continue
            raise DeployError(f"pre-flight: {what} would fail: {code}: {error.get('Message', '')}".rstrip(": ")) \
                from None
        else:
            raise DeployError(f"pre-flight: {what} did not honour DryRun; nothing more is tried")
    return sorted(set(allowed)), refused


def require(aws: Aws, arn: str, checks: Checks, report: Report, verb: str = "created") -> None:
    """Every permission the command needs, for the credentials of arn (identity()); report what was checked."""
    report(f"pre-flight: AWS credentials of {arn}, region {aws.region}")
    allowed, refused = permitted(checks)
    if refused:
        raise DeployError(f"pre-flight: {arn} may not {', '.join(refused)}; grant these EC2 actions "
                          f"(docs/deploy.md lists them); nothing was {verb}")
    if allowed:
        report(f"pre-flight: permitted (EC2 DryRun): {', '.join(allowed)}")


def require_vcpus(aws: Aws, needed: int, report: Report) -> None:
    """The account's standard On-Demand vCPU quota in this region leaves room for needed more vCPUs."""
    if needed <= 0:
        return
    used = quotas.in_use(aws.ec2)
    limit, why_not = quotas.quota(aws.quotas)
    if limit is None:
        report(f"pre-flight: vCPUs: {needed} more needed, {used} in use in {aws.region}; the quota was not "
               f"checked: {why_not} (grant servicequotas:GetServiceQuota to check it)")
        return
    if quotas.shortfall(limit, used, needed):
        raise DeployError(f"pre-flight: the On-Demand standard vCPU quota in {aws.region} is {limit:g}, {used} are "
                          f"in use and the cluster needs {needed} more: ask for {used + needed} or more (Service "
                          f"Quotas, ec2 {VCPU_QUOTA_CODE}), or ask for fewer --workers; nothing was created")
    report(f"pre-flight: vCPUs: {needed} more needed, {used} in use, quota {limit:g} in {aws.region}")
