"""Retries with backoff for what AWS or a booting host makes eventually consistent: bounded, each one logged."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from inferq.deploy.defaults import AWS_RETRY_ATTEMPTS, AWS_RETRY_LONGEST, AWS_RETRY_SECONDS

log = logging.getLogger(__name__)

T = TypeVar("T")


def delays(attempts: int, first: float, longest: float) -> list[float]:
    """The waits between attempts: doubling from first, never above longest (attempts - 1 of them)."""
    return [min(longest, first * 2 ** n) for n in range(max(0, attempts - 1))]


def retrying(what: str, call: Callable[[], T], transient: Callable[[BaseException], str | None],
             attempts: int, first: float, longest: float, sleep: Callable[[float], None] = time.sleep) -> T:
    """call() until it succeeds; transient(exc) names a failure worth waiting out, else it is raised at once.

    The last failure is raised as it is once the attempts are spent; every wait
    is logged (what failed, why, which retry, for how long).
    """
    waits = delays(attempts, first, longest)
    for attempt in range(len(waits) + 1):
        try:
            return call()
        except Exception as exc:
            reason = transient(exc)
            if reason is None or attempt == len(waits):
                raise
            log.warning("%s: %s; retry %d of %d in %gs", what, reason, attempt + 1, len(waits), waits[attempt])
            sleep(waits[attempt])
    raise AssertionError("unreachable")


def aws_codes(*codes: str) -> Callable[[BaseException], str | None]:
    """transient() for botocore ClientErrors carrying one of codes (DependencyViolation ...)."""
    def transient(exc: BaseException) -> str | None:
        error = getattr(exc, "response", {}).get("Error", {}) if hasattr(exc, "response") else {}
        code = error.get("Code")
        return f"{code} ({error.get('Message', '')})".replace(" ()", "") if code in codes else None
    return transient


def eventually(what: str, call: Callable[[], T], *codes: str) -> T:
    """call() retried with backoff while AWS answers one of codes (it has not caught up yet); each retry logged."""
    return retrying(what, call, aws_codes(*codes), AWS_RETRY_ATTEMPTS, AWS_RETRY_SECONDS, AWS_RETRY_LONGEST)
