"""A worker process's Redis clients, made once: the broker's (the record of taken jobs) and the result backend's.

Both are usually the same Redis (REDIS_URL); INFERQ_BROKER_URL and
INFERQ_RESULT_BACKEND may part them. Celery's own connections are separate.
"""
from __future__ import annotations

from functools import cache

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from inferq.settings import Worker, current


@cache
def backend() -> redis.Redis:
    """The result backend's Redis: results, metrics, cancel marks, callback states."""
    settings = current(Worker)
    return redis.Redis.from_url(settings.backend, socket_timeout=settings.redis_timeout,
                                socket_connect_timeout=settings.redis_timeout)


@cache
def broker() -> redis.Redis:
    """The broker's Redis: taking batch-mates, acknowledging and giving back what this worker holds."""
    settings = current(Worker)
    # Fail fast: a failed take skips the batch-mates, a failed acknowledgement is left to the lease.
    return redis.Redis.from_url(settings.broker, socket_timeout=settings.redis_timeout,
                                socket_connect_timeout=settings.redis_timeout, retry=Retry(NoBackoff(), 0))
