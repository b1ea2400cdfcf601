"""Retries where AWS is eventually consistent: bounded, with backoff, each one logged.

moto deletes a security group at once (it never answers DependencyViolation
for one), so AWS's answer is made here as botocore makes it from the wire: a
ClientError with AWS's code and message, raised by the call being retried.
"""
from __future__ import annotations

import logging

import pytest
from botocore.exceptions import ClientError

from inferq.deploy import retry

IN_USE = {"Error": {"Code": "DependencyViolation", "Message": "resource sg-0abc has a dependent object"}}


def flaky(failures: int, error: dict):
    """A call that fails `failures` times with an AWS error, then succeeds; and the list of its calls."""
    calls = []

    def call():
        calls.append(len(calls))
        if len(calls) <= failures:
            raise ClientError(error, "DeleteSecurityGroup")
        return "deleted"
    return call, calls


def test_a_dependency_violation_is_waited_out_with_backoff_and_logged(caplog):
    call, calls = flaky(3, IN_USE)
    waits: list[float] = []
    with caplog.at_level(logging.WARNING, logger="inferq.deploy.retry"):
        done = retry.retrying("deleting security group inferq-workers", call, retry.aws_codes("DependencyViolation"),
                              attempts=8, first=5, longest=30, sleep=waits.append)
    assert done == "deleted" and len(calls) == 4
    assert waits == [5, 10, 20]
    assert [r.getMessage() for r in caplog.records] == [
        f"deleting security group inferq-workers: DependencyViolation (resource sg-0abc has a dependent object); "
        f"retry {n} of 7 in {w}s" for n, w in ((1, 5), (2, 10), (3, 20))]


def test_retries_are_bounded_and_other_errors_are_not_retried():
    call, calls = flaky(99, IN_USE)
    waits: list[float] = []
    with pytest.raises(ClientError):
        retry.retrying("x", call, retry.aws_codes("DependencyViolation"), attempts=8, first=5, longest=30,
                       sleep=waits.append)
    assert len(calls) == 8 and waits == [5, 10, 20, 30, 30, 30, 30]  # about 2.5 minutes in all, then it stops
    call, calls = flaky(1, {"Error": {"Code": "UnauthorizedOperation", "Message": "no"}})
    with pytest.raises(ClientError):
        retry.retrying("x", call, retry.aws_codes("DependencyViolation"), attempts=8, first=5, longest=30,
                       sleep=waits.append)
    assert len(calls) == 1
