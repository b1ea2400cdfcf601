"""Admission control: refuse new jobs with 429 once the queue is too deep.

Beyond ``INFERQ_MAX_QUEUE_DEPTH`` waiting jobs, accepting more only makes
every client wait longer and Redis grow; a 429 with ``Retry-After`` tells
clients to come back, and keeps Redis memory bounded. The depth is the
length of the queue's list in Redis (Celery's Redis transport keeps waiting
jobs in a list named after the queue), read by JobStore.create in the same
round trip that records the job.
"""
from __future__ import annotations

from inferq.api.errors import ApiError


def admit(depth: int, max_depth: int, retry_after: int) -> None:
    """Raise 429 queue_full if the queue already held max_depth jobs (depth: its length just read)."""
    if depth >= max_depth:
        raise ApiError(
            429, "queue_full",
            f"{depth} jobs are waiting, the most this API queues; retry after {retry_after}s",
            headers={"Retry-After": str(retry_after)},
        )
