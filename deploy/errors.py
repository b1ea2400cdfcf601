"""The deploy tooling's errors: one line each, saying what failed and what to do."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class DeployError(RuntimeError):
    """A deploy step failed; str() is the one line shown to the operator."""


class AwsError(DeployError):
    """An AWS call failed: what was attempted and the AWS error code."""


@contextmanager
def aws_call(what: str) -> Iterator[None]:
    """Turn botocore's exceptions inside the block into one-line AwsErrors naming `what`."""
    from botocore.exceptions import BotoCoreError, ClientError, WaiterError

    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        detail = f"{error.get('Code', 'Unknown')}: {error.get('Message', '')}".rstrip(": ")
        raise AwsError(f"{what} failed: {detail}") from None
    except WaiterError as exc:
        reason = exc.last_response.get("Error", {}).get("Code") if exc.last_response else None
        raise AwsError(f"{what} failed: waiter gave up ({reason or exc.kwargs.get('reason', 'timeout')})") from None
    except BotoCoreError as exc:
        # No credentials, no region, endpoint unreachable: botocore's own message is one line.
        raise AwsError(f"{what} failed: {type(exc).__name__}: {exc}") from None
