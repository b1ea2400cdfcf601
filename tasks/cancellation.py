"""Cancelled jobs on the worker's side: skip one before it runs, discard the result of one cancelled while it ran.

``DELETE /jobs/<id>`` leaves a mark in Redis (contract.CANCEL_KEY): "queued"
when no worker had started the job (the API stored its REVOKED state
already), "running" when one had. A worker marks a job running before it
looks for the mark (tasks/deliveries.py, then here), and the API reads the
running mark and writes its own in one script, so a job is either skipped
here or, if it was already running, has its result discarded once it is done.

Either way the job's final state is REVOKED ("cancelled"), Flower is told
with a ``task-revoked`` event, and its callback, if any, is sent. The
functions take job ids, so a batch calls them per job.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable

import redis

from inferq.contract import CANCEL_KEY
from inferq.tasks import callbacks

log = logging.getLogger(__name__)


class Cancelled(Exception):
    """The job was cancelled: store nothing but its cancelled state (already done when this is raised)."""


def cancelled(job_ids: Iterable[str | None]) -> set[str]:
    """The ids among job_ids that a DELETE cancelled (one round trip); a Redis error says none."""
    ids = [job_id for job_id in job_ids if job_id]
    if not ids:
        return set()
    try:
        marks = callbacks.client().mget([CANCEL_KEY.format(job_id) for job_id in ids])
    except redis.RedisError as exc:
        # The result is checked again before it is stored (finish_cancelled).
        log.warning("cannot read cancel marks (%s); running the job(s)", type(exc).__name__)
        return set()
    return {job_id for job_id, mark in zip(ids, marks) if mark is not None}


def _revoke(job_id: str, why: str) -> None:
    """Store the job's cancelled state, tell Flower, send its callback."""
    from inferq.celery_app import app

    app.backend.mark_as_revoked(job_id, reason="cancelled")
    log.info("job %s cancelled %s", job_id, why)
    try:
        with app.events.default_dispatcher() as dispatcher:
            dispatcher.send("task-revoked", uuid=job_id, terminated=False, signum=None, expired=False)
    except Exception as exc:  # Flower's view only
        log.warning("could not send task-revoked for job %s: %s", job_id, exc)
    callbacks.job_finished(job_id)


def check(job_id: str | None) -> None:
    """Before running a job: raise Cancelled (its state stored) if it was cancelled."""
    if job_id and job_id in cancelled([job_id]):
        _revoke(job_id, "before it ran: skipped")
        raise Cancelled(job_id)


def finish_cancelled(job_id: str | None) -> bool:
    """After running a job, before storing its result: True (its result to be discarded, its cancelled state
    stored) if it was cancelled meanwhile."""
    if job_id and job_id in cancelled([job_id]):
        _revoke(job_id, "while it ran: its result is discarded")
        return True
    return False
