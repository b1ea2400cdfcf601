"""Poison-job guard: a job whose workers keep dying under it is failed with a reason, not run again.

A job whose input kills its worker is given back after every death (late
acknowledgement). The take counts each delivery of a message given back after
its worker died (broker/scripts.TAKE, in Redis, outside the worker that dies)
and hands the count to the task (contract.DELIVERY_HEADER). Past
``INFERQ_MAX_DELIVERIES`` the job is failed instead of run again, so it cannot
take down workers forever. A job a live worker gave back (SIGTERM, an
interrupted batch) is no failed delivery and is not counted.
"""
from __future__ import annotations

import logging

from inferq.settings import Worker, current

log = logging.getLogger(__name__)


class PoisonJob(Exception):
    """A job was started too many times without finishing: it is failed, not retried."""


def admit(job_id: str, deliveries: int) -> None:
    """Raise PoisonJob if the job, at its deliveries-th delivery, has used up INFERQ_MAX_DELIVERIES."""
    max_deliveries = current(Worker).max_deliveries
    if deliveries > max_deliveries:
        log.error("job %s delivered %d times without finishing; failing it as a poison job", job_id, deliveries)
        raise PoisonJob(
            f"the job was started {deliveries - 1} times and never finished: its worker died "
            f"or stopped answering each time (INFERQ_MAX_DELIVERIES={max_deliveries}); it is not retried again"
        )
    if deliveries > 1:
        log.warning("job %s redelivered (delivery %d of at most %d)", job_id, deliveries, max_deliveries)
