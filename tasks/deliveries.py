"""Poison-job guard: count deliveries per job id, give up after a bounded number.

A job whose input kills its worker is redelivered after every death (late
acknowledgement). Counting deliveries in Redis, outside the worker that dies,
bounds that loop: past ``INFERQ_MAX_DELIVERIES`` the job is failed with a
reason instead of run again, so it cannot take down workers forever.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

import redis
from celery.exceptions import Reject
from redis.backoff import NoBackoff
from redis.retry import Retry

from inferq.settings import Worker, current

log = logging.getLogger(__name__)

# contract.RUNNING_KEY is written in the same round trip as the delivery count. It
# replaces Celery's STARTED state (task_track_started), which cost every job a
# read and a write of the result key and woke every long-poll once more.


class PoisonJob(Exception):
    """A job was started too many times without finishing: it is failed, not retried."""


_client: redis.Redis | None = None


def client() -> redis.Redis:
    global _client
    if _client is None:
        settings = current(Worker)
        _client = redis.Redis.from_url(
            settings.broker, socket_timeout=settings.redis_timeout,
            socket_connect_timeout=settings.redis_timeout,
            retry=Retry(NoBackoff(), 0),  # fail fast; admit() gives the job back
        )
    return _client


def admit(job_id: str, count: Callable[[], int]) -> int:
    """Count this delivery with count() (tasks/batching.start: one round trip that also marks the job
    running and takes its batch-mates); raise PoisonJob if the job has used up its deliveries."""
    try:
        deliveries = count()
    except redis.RedisError as exc:
        # Redis is away: that says nothing about the job. Give it back to the
        # queue instead of failing it (a failure would be acknowledged, and its
        # record could not even be stored); Redis restores it if this cannot.
        log.warning("cannot count deliveries of job %s (%s); giving it back", job_id, type(exc).__name__)
        raise Reject(f"Redis unreachable: {type(exc).__name__}", requeue=True) from None
    max_deliveries = current(Worker).max_deliveries
    if deliveries > max_deliveries:
        log.error("job %s delivered %d times without finishing; failing it as a poison job",
                  job_id, deliveries)
        raise PoisonJob(
            f"the job was started {deliveries - 1} times and never finished: its worker died "
            f"or lost Redis each time (INFERQ_MAX_DELIVERIES={max_deliveries}); "
            "it is not retried again"
        )
    if deliveries > 1:
        log.warning("job %s redelivered (delivery %d of at most %d)",
                    job_id, deliveries, max_deliveries)
    return deliveries
