"""Admission control: refuse new jobs with 429 once the queue is too deep.

Beyond ``INFERQ_MAX_QUEUE_DEPTH`` waiting jobs, accepting more only makes
every client wait longer and Redis grow; a 429 with ``Retry-After`` tells
clients to come back, and keeps Redis memory bounded.
"""
from __future__ import annotations

import redis

from api.errors import ApiError


def queue_depth(client: redis.Redis, queue: str) -> int:
    """Jobs waiting in the queue (Celery's Redis transport keeps them in a list named after it)."""
    return int(client.llen(queue))


def admit(client: redis.Redis, queue: str, max_depth: int, retry_after: int) -> None:
    """Raise 429 queue_full if the queue already holds max_depth jobs."""
    depth = queue_depth(client, queue)
    if depth >= max_depth:
        raise ApiError(
            429, "queue_full",
            f"{depth} jobs are waiting, the most this API queues; retry after {retry_after}s",
            headers={"Retry-After": str(retry_after)},
        )
