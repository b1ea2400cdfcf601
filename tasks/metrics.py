"""A worker's part of the job metrics: count each finished job and observe its end-to-end latency in Redis.

The API counts a job submitted in the round trip that records it and reads
every counter for ``/metrics`` (api/metrics.py); the keys are in contract.py.

Decision: the counts live in Redis, not in prometheus_client's per-process
registries. Jobs are submitted in any of gunicorn's worker processes and
finish in Celery workers, possibly on other machines; Redis is the one place
all of them share, so INCR there is right across processes and hosts (no
multiprocess-mode directory to manage), survives an API restart, and costs
one pipelined round trip per job.
"""
from __future__ import annotations

import bisect
import logging
import time
from typing import Any

import redis

from inferq.contract import FAILED_KEY, LATENCY_BUCKETS, LATENCY_KEY, SUCCEEDED_KEY
from inferq.settings import Worker, current

log = logging.getLogger(__name__)


def bucket_of(seconds: float) -> str:
    """The label of the (non-cumulative) bucket a latency falls in."""
    index = bisect.bisect_left(LATENCY_BUCKETS, seconds)
    return "+Inf" if index == len(LATENCY_BUCKETS) else repr(LATENCY_BUCKETS[index])


def record_finished(client: redis.Redis, succeeded: bool, queued_at: float | None,
                    finished_at: float | None = None) -> None:
    """Count a finished job and, when its submission time is known, observe its end-to-end latency."""
    finished_at = finished_at or time.time()
    pipe = client.pipeline(transaction=True)
    pipe.incr(SUCCEEDED_KEY if succeeded else FAILED_KEY)
    if queued_at:
        latency = max(0.0, finished_at - queued_at)
        pipe.hincrby(LATENCY_KEY, bucket_of(latency), 1)
        pipe.hincrbyfloat(LATENCY_KEY, "sum", latency)
        pipe.hincrby(LATENCY_KEY, "count", 1)
    pipe.execute()


_client: list[redis.Redis] = []


def _own_client() -> redis.Redis:
    if not _client:
        settings = current(Worker)
        _client.append(redis.Redis.from_url(settings.backend, socket_timeout=settings.redis_timeout,
                                            socket_connect_timeout=settings.redis_timeout))
    return _client[0]


def finished(request: Any, succeeded: bool) -> None:
    """Record a finished job from a worker; a metric must never fail a job whose result is stored.

    request: the job's Celery request (or celery-batches' per-job request): the
    queued_at the API sent in its kwargs (contract.classify_message).
    """
    queued_at = (request.kwargs or {}).get("queued_at")
    try:
        record_finished(_own_client(), succeeded, queued_at)
    except redis.RedisError as exc:
        log.warning("could not record job metrics: %s", exc)
