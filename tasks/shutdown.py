"""Scale-in without waiting: SIGTERM gives the in-flight job back to the queue at once.

Celery's warm shutdown (its SIGTERM) lets the running job finish, and its cold
shutdown cannot cancel a job in the solo pool (it raises NotImplementedError
into the job and the worker hangs). inferq's workers run one job at a time in
the solo pool, so on SIGTERM this handler stops the job where it is instead:
the job ends with an exception that is not a task failure, the worker exits,
and closing its broker channel puts the unacknowledged message back on the
queue for another worker, without waiting for the visibility timeout.
A worker with no job in flight shuts down as Celery's warm shutdown does.

Only the first SIGTERM interrupts: a second one (a supervisor repeating it, a
container runtime's stop and then the orchestrator's) must not break into the
give-back the first one started, which would leave jobs recorded for a worker
that is gone, until its restart or their leases bring them back (kombu#1405).
"""
from __future__ import annotations

import logging

from celery import signals
from celery.exceptions import WorkerShutdown
from celery.platforms import signals as platform_signals

log = logging.getLogger(__name__)


class JobInterrupted(WorkerShutdown):
    """Raised into the running job on SIGTERM: the worker leaves, the job is given back."""


_leaving = False


def _on_sigterm(signum=None, frame=None):
    global _leaving
    from celery.worker import state

    state.should_stop = 0  # the warm-shutdown flag: stop consuming, exit cleanly
    if _leaving:
        log.info("SIGTERM again: already giving back and leaving")
        return
    _leaving = True
    if state.active_requests:
        ids = ", ".join(r.id for r in state.active_requests)
        log.warning("SIGTERM with job(s) %s in flight: giving them back to the queue", ids)
        raise JobInterrupted(0)
    log.info("SIGTERM: no job in flight, shutting down")


def interrupt_if_leaving() -> None:
    """Raise JobInterrupted into a job that starts after the worker's SIGTERM. The transport may have taken it
    (and its batch-mates) just before the signal, with no job in flight yet for the handler to interrupt;
    Celery's warm shutdown would then run the whole batch before leaving. Raised here, the job and its batch
    go back to the queue at once, as they would a moment later (kombu#1405's test caught the window in CI)."""
    if _leaving:
        log.warning("SIGTERM came before this job started: giving it back to the queue")
        raise JobInterrupted(0)


@signals.worker_ready.connect
def _install(**_):
    # worker_ready comes after Celery installed its own handlers: replace its SIGTERM one.
    platform_signals["SIGTERM"] = _on_sigterm
