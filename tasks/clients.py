"""A worker process's Redis clients, made once: the broker's (the record of taken jobs) and the result backend's.

Both are usually the same Redis (REDIS_URL); INFERQ_BROKER_URL and
INFERQ_RESULT_BACKEND may part them. With Sentinel both are the primary it names
(redislink.py). Celery's own connections are separate.
"""
from __future__ import annotations

from functools import cache

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from inferq import redislink
from inferq.settings import Worker, current


@cache
def backend() -> redis.Redis:
    """The result backend's Redis: results, metrics, cancel marks, callback states."""
    link = current(Worker).redis
    return redislink.client(link, link.backend, socket_timeout=link.timeout, socket_connect_timeout=link.timeout)


@cache
def broker() -> redis.Redis:
    """The broker's Redis: taking batch-mates, acknowledging and giving back what this worker holds."""
    link = current(Worker).redis
    # Fail fast: a failed take skips the batch-mates, a failed acknowledgement is left to the lease.
    return redislink.client(link, link.broker, socket_timeout=link.timeout,
                            socket_connect_timeout=link.timeout, retry=Retry(NoBackoff(), 0))
