"""Admission control: refuse new jobs with 429 once the queue is too deep, or Redis's memory nearly full.

Beyond ``INFERQ_MAX_QUEUE_DEPTH`` waiting jobs, accepting more only makes
every client wait longer and Redis grow; a 429 with ``Retry-After`` tells
clients to come back, and keeps Redis memory bounded. Each lane (interactive:
one text; bulk) has its own cap, so a flood of bulk work never refuses a
single text. The depth is the length of the lane's list in Redis (Celery's Redis transport keeps waiting
jobs in a list named after the queue), read by JobStore.create in the same
round trip that records the job.

Depth alone does not bound memory (a job may carry a megabyte of text): when
Redis has a maxmemory, submits are refused past ``INFERQ_REDIS_MEMORY_HIGH``
of it, well before Redis refuses writes itself. The rest is kept for what
jobs already accepted still write (their results, the workers' bookkeeping):
an accepted job is never lost to a full Redis.
"""
from __future__ import annotations

from inferq.api.errors import ApiError


def admit(depth: int, max_depth: int, retry_after: int, lane: str = "interactive") -> None:
    """Raise 429 queue_full if the job's lane already held max_depth jobs (depth: its length just read)."""
    if depth >= max_depth:
        raise ApiError(
            429, "queue_full",
            f"{depth} jobs are waiting in the {lane} lane, the most this API queues there; "
            f"retry after {retry_after}s",
            headers={"Retry-After": str(retry_after)},
        )


def admit_memory(used: int, limit: int, high: float, retry_after: int) -> None:
    """Raise 429 queue_full if Redis holds high (a share) of its maxmemory limit or more; no limit, no check."""
    if limit and used >= high * limit:
        raise ApiError(
            429, "queue_full",
            f"the job queue's memory is {used / limit:.0%} full, the most this API fills it; "
            f"retry after {retry_after}s",
            headers={"Retry-After": str(retry_after)},
        )
