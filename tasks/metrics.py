"""Job counters and the end-to-end latency histogram, kept in Redis; the API's /metrics reads them.

The API counts a job submitted in the same pipelined round trip that records
it (api/store.py); the workers count finished jobs on Celery's task_success
and task_failure signals.

Decision: the counts live in Redis, not in prometheus_client's per-process
registries. Jobs are submitted in any of gunicorn's worker processes and
finish in Celery workers, possibly on other machines; Redis is the one place
all of them share, so INCR there is right across processes and hosts (no
multiprocess-mode directory to manage), survives an API restart, and costs
one pipelined round trip per job. This module imports neither Flask nor
torch: the API and the workers both use it.
"""
from __future__ import annotations

import bisect
import json
import logging
import time

import redis
from celery import signals

log = logging.getLogger(__name__)

PREFIX = "inferq:metrics:"
SUBMITTED_KEY = PREFIX + "submitted"
SUCCEEDED_KEY = PREFIX + "succeeded"
FAILED_KEY = PREFIX + "failed"
LATENCY_KEY = PREFIX + "latency"
"""Hash: per bucket upper bound (seconds, as text, "+Inf" last) the count of jobs in it, plus sum and count."""

BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
"""Latency bucket bounds in seconds: from a tiny model's milliseconds to a backlog's minutes."""

JOB_KEY = "inferq:job:{}"
"""The API's job record (api.store.JOB_KEY; not imported so that workers never import Flask)."""

CLASSIFY_TASK = "inferq.classify"


def bucket_of(seconds: float) -> str:
    """The label of the (non-cumulative) bucket a latency falls in."""
    index = bisect.bisect_left(BUCKETS, seconds)
    return "+Inf" if index == len(BUCKETS) else repr(BUCKETS[index])


def record_submitted(client: redis.Redis, n: int = 1) -> None:
    """Count n jobs the API accepted (a client or a pipeline; -1 takes one back)."""
    client.incrby(SUBMITTED_KEY, n)


def record_finished(client: redis.Redis, job_id: str, succeeded: bool, finished_at: float | None = None,
                    queued_at: float | None = None) -> None:
    """Count a finished job and, when its submission time is known, observe its end-to-end latency.

    queued_at comes with the job's message; a message without it (queued by an
    older API) costs one more round trip to read it from the job's record.
    """
    finished_at = finished_at or time.time()
    if queued_at is None:
        raw = client.get(JOB_KEY.format(job_id))
        queued_at = json.loads(raw).get("queued_at") if raw else None
    pipe = client.pipeline(transaction=True)
    pipe.incr(SUCCEEDED_KEY if succeeded else FAILED_KEY)
    if queued_at:
        latency = max(0.0, finished_at - queued_at)
        pipe.hincrby(LATENCY_KEY, bucket_of(latency), 1)
        pipe.hincrbyfloat(LATENCY_KEY, "sum", latency)
        pipe.hincrby(LATENCY_KEY, "count", 1)
    pipe.execute()


def read(client: redis.Redis) -> dict:
    """Every counter, and the latency histogram as cumulative (bound, count) pairs, from one round trip."""
    pipe = client.pipeline(transaction=False)
    pipe.mget(SUBMITTED_KEY, SUCCEEDED_KEY, FAILED_KEY)
    pipe.hgetall(LATENCY_KEY)
    (submitted, succeeded, failed), latency = pipe.execute()
    latency = {k.decode(): v.decode() for k, v in latency.items()}
    cumulative, running = [], 0
    for bound in (*map(repr, BUCKETS), "+Inf"):
        running += int(latency.get(bound, 0))
        cumulative.append((bound, running))
    return {
        "submitted": int(submitted or 0),
        "succeeded": int(succeeded or 0),
        "failed": int(failed or 0),
        "latency_buckets": cumulative,
        "latency_sum": float(latency.get("sum", 0.0)),
        "latency_count": int(latency.get("count", 0)),
    }


_client: list[redis.Redis] = []


def _own_client() -> redis.Redis:
    if not _client:
        from inferq.celeryconfig import SETTINGS

        _client.append(redis.Redis.from_url(
            SETTINGS.result_backend, socket_timeout=SETTINGS.redis_socket_timeout,
            socket_connect_timeout=SETTINGS.redis_socket_timeout,
        ))
    return _client[0]


def finished(request, succeeded: bool) -> None:
    """Record a finished job from a worker; a metric must never fail a job whose result is stored.

    request: the job's Celery request (or celery-batches' per-job request): its
    id, and the queued_at the API sent in its kwargs.
    """
    queued_at = (request.kwargs or {}).get("queued_at")
    try:
        record_finished(_own_client(), request.id, succeeded, queued_at=queued_at)
    except redis.RedisError as exc:
        log.warning("could not record job metrics: %s", exc)


def _finished(sender, succeeded: bool, result=None) -> None:
    # One job per task; a batch task (INFERQ_BATCH_SIZE > 1) returns a count, not
    # a job's result: tasks/batching.py records each of its jobs itself.
    if getattr(sender, "name", None) != CLASSIFY_TASK or (succeeded and not isinstance(result, dict)):
        return
    finished(sender.request, succeeded)


@signals.task_success.connect
def _on_success(sender=None, result=None, **_):
    _finished(sender, True, result)


@signals.task_failure.connect
def _on_failure(sender=None, **_):
    _finished(sender, False)
