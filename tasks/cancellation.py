"""Cancelled jobs on the worker's side: skip one before it runs, discard the result of one cancelled while it ran.

``DELETE /jobs/<id>`` leaves a mark in Redis (contract.CANCEL_KEY): "queued"
when no worker had started the job (the API stored its REVOKED state
already), "running" when one had. A worker marks a job running before it
looks for the mark (tasks/deliveries.py, then here), and the API reads the
running mark and writes its own in one script, so a job is either skipped
here or, if it was already running, has its result discarded once it is done.

Either way the job's final state is REVOKED ("cancelled"), Flower is told
with a ``task-revoked`` event, and its callback, if any, is sent (tasks/jobs.py
does all three with the rest of the batch: one read of the marks before the
batch runs, one after).
"""
from __future__ import annotations

import logging
from collections.abc import Iterable

import redis

from inferq.contract import CANCEL_KEY
from inferq.tasks import clients

log = logging.getLogger(__name__)


QUEUED = b"queued"
"""The mark of a job cancelled before any worker marked it running: the API stored its state and queued its
callback itself."""


def cancelled(job_ids: Iterable[str | None]) -> dict[str, bytes]:
    """The ids among job_ids that a DELETE cancelled, with their marks (one round trip); a Redis error says
    none."""
    ids = [job_id for job_id in job_ids if job_id]
    if not ids:
        return {}
    try:
        marks = clients.backend().mget([CANCEL_KEY.format(job_id) for job_id in ids])
    except redis.RedisError as exc:
        # The result is checked again before it is stored (after the forward pass).
        log.warning("cannot read cancel marks (%s); running the job(s)", type(exc).__name__)
        return {}
    return {job_id: mark if isinstance(mark, bytes) else str(mark).encode()
            for job_id, mark in zip(ids, marks) if mark is not None}
