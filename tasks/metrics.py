"""A worker's part of the job metrics: count each finished job and observe its end-to-end latency in Redis.

The API counts a job submitted in the round trip that records it and reads
every counter for ``/metrics`` (api/metrics.py); the keys are in contract.py.
A worker adds up what its jobs finished and writes it at every heartbeat
(tasks/worker.py) and when it stops, in one round trip: four or five commands
a batch cost otherwise, most of a worker's Redis commands past the job's own.
A worker SIGKILLed loses the counts of its last heartbeat interval (the jobs
themselves are stored): /metrics may then count a few jobs fewer than ran.

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
import threading
import time

import redis

from inferq.contract import FAILED_KEY, LATENCY_BUCKETS, LATENCY_KEY, SUCCEEDED_KEY
from inferq.tasks import clients

log = logging.getLogger(__name__)


def bucket_of(seconds: float) -> str:
    """The label of the (non-cumulative) bucket a latency falls in."""
    index = bisect.bisect_left(LATENCY_BUCKETS, seconds)
    return "+Inf" if index == len(LATENCY_BUCKETS) else repr(LATENCY_BUCKETS[index])


def record_many(client: redis.Redis, jobs: list[tuple[bool, float | None]]) -> None:
    """Count finished jobs (succeeded, end-to-end latency in seconds if known) and observe their latencies: one
    round trip and a few commands for them all."""
    succeeded = sum(1 for ok, _ in jobs if ok)
    buckets: dict[str, int] = {}
    total, timed = 0.0, 0
    for _, latency in jobs:
        if latency is not None:
            latency = max(0.0, latency)
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


class Tally:
    """Finished jobs not yet written to Redis: (succeeded, end-to-end latency) each, thread-safe."""

    def __init__(self) -> None:
        self._jobs: list[tuple[bool, float | None]] = []
        self._lock = threading.Lock()

    def add(self, jobs: list[tuple[bool, float | None]]) -> None:
        """Tally jobs (succeeded, queued_at: when the API accepted it, if known) finished now."""
        now = time.time()
        with self._lock:
            self._jobs.extend((ok, None if queued_at is None else now - queued_at) for ok, queued_at in jobs)

    def flush(self, client: redis.Redis) -> None:
        """Write what was tallied (one round trip); keep it for the next flush if Redis does not answer."""
        with self._lock:
            jobs, self._jobs = self._jobs, []
        if not jobs:
            return
        try:
            record_many(client, jobs)
        except redis.RedisError as exc:
            log.warning("could not record job metrics (%s); trying again at the next heartbeat", exc)
            with self._lock:
                self._jobs[:0] = jobs


tally = Tally()


def finished_many(jobs: list[tuple[bool, float | None]]) -> None:
    """Count finished jobs (succeeded, queued_at): written at the next heartbeat, never failing a job."""
    if jobs:
        tally.add(jobs)


def flush() -> None:
    """Write the counted jobs to Redis (the heartbeat thread, and a worker that stops)."""
    tally.flush(clients.backend())
