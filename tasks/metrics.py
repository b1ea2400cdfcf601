"""A worker's part of the job metrics: count each finished job and observe its end-to-end latency in Redis.

The API counts a job submitted in the round trip that records it and reads
every counter for ``/metrics`` (api/metrics.py); the keys are in contract.py.

Decision: the counts live in Redis, not in prometheus_client's per-process
registries. Jobs are submitted in any of gunicorn's worker processes and
finish in Celery workers, possibly on other machines; Redis is the one place
all of them share, so INCR there is right across processes and hosts (no
multiprocess-mode directory to manage), survives an API restart, and costs
one pipelined round trip per batch of jobs.
"""
from __future__ import annotations

import bisect
import logging
import time

import redis

from inferq.contract import FAILED_KEY, LATENCY_BUCKETS, LATENCY_KEY, SUCCEEDED_KEY
from inferq.tasks import clients

log = logging.getLogger(__name__)


def bucket_of(seconds: float) -> str:
    """The label of the (non-cumulative) bucket a latency falls in."""
    index = bisect.bisect_left(LATENCY_BUCKETS, seconds)
    return "+Inf" if index == len(LATENCY_BUCKETS) else repr(LATENCY_BUCKETS[index])


def record_many(client: redis.Redis, jobs: list[tuple[bool, float | None]], finished_at: float | None = None) -> None:
    """Count finished jobs (succeeded, queued_at: when the API accepted it, if known) and observe their end-to-end
    latency: one round trip and a few commands for a whole batch."""
    finished_at = finished_at or time.time()
    succeeded = sum(1 for ok, _ in jobs if ok)
    buckets: dict[str, int] = {}
    total, timed = 0.0, 0
    for _, queued_at in jobs:
        if queued_at:
            latency = max(0.0, finished_at - queued_at)
            buckets[bucket_of(latency)] = buckets.get(bucket_of(latency), 0) + 1
            total, timed = total + latency, timed + 1
    pipe = client.pipeline(transaction=False)
    if succeeded:
        pipe.incrby(SUCCEEDED_KEY, succeeded)
    if len(jobs) - succeeded:
        pipe.incrby(FAILED_KEY, len(jobs) - succeeded)
    for bucket, n in buckets.items():
        pipe.hincrby(LATENCY_KEY, bucket, n)
    if timed:
        pipe.hincrbyfloat(LATENCY_KEY, "sum", total)
        pipe.hincrby(LATENCY_KEY, "count", timed)
    pipe.execute()


def finished_many(jobs: list[tuple[bool, float | None]]) -> None:
    """Record finished jobs (succeeded, queued_at) from a worker; a metric must never fail a job whose result is
    stored."""
    if not jobs:
        return
    try:
        record_many(clients.backend(), jobs)
    except redis.RedisError as exc:
        log.warning("could not record job metrics: %s", exc)
