"""The inference task: unpack the message, call the plain function, report.

The task has one contract whatever the batching setting (contract.py): the
name CLASSIFY_TASK, the message of classify_message, and a JobResult stored
per job. INFERQ_BATCH_SIZE only chooses how the worker runs it: one job per
call, or several waiting jobs in one forward pass (tasks/batching.py).
"""
from __future__ import annotations

import time

from celery import signals
from celery.exceptions import Ignore

from inferq import contract
from inferq.celery_app import app
from inferq.settings import Worker, current
from inferq.tasks import callbacks, cancellation, deliveries, faults, inference, metrics, worker


def admit(job_id: str | None, texts: list[str]) -> None:
    """Checks every job passes before inference, alone or in a batch (raises cancellation.Cancelled)."""
    deliveries.admit(job_id, worker.hostname())  # poison-job guard, and "running"
    cancellation.check(job_id)  # after "running": a DELETE either saw it running or left its mark first
    faults.inject(texts)  # test-only, off unless INFERQ_TEST_FAULTS=1


def finished(job_id: str | None) -> None:
    """A job reached its final state (succeeded, failed; cancelled is cancellation's): send its callback."""
    callbacks.job_finished(job_id)


def run(job_id: str | None, texts: list[str]) -> contract.JobResult:
    """Classify one job's texts; the result says which model, which worker and when."""
    admit(job_id, texts)
    loaded = worker.current_model()
    started_at = time.time()
    results = inference.classify(loaded, texts)
    finished_at = time.time()
    if cancellation.finish_cancelled(job_id):
        raise cancellation.Cancelled(job_id)
    return {
        "model": loaded.info,
        "results": results,
        "started_at": started_at,
        "finished_at": finished_at,
        "worker": worker.identity(),
    }


if current(Worker).batch_size > 1:
    from inferq.tasks.batching import ClassifyBatches, run_batch

    @app.task(name=contract.CLASSIFY_TASK, base=ClassifyBatches)
    def classify_job(requests) -> int:
        """Classify up to INFERQ_BATCH_SIZE waiting jobs together, storing (and counting) each job's result."""
        return run_batch(classify_job, requests, admit, finished)
else:
    @app.task(name=contract.CLASSIFY_TASK)
    def classify_job(texts: list[str], queued_at: float | None = None) -> contract.JobResult:
        """Classify a job's texts; the result says which model, which worker and when.

        queued_at: when the API accepted the job (for the latency metric, tasks/metrics.py).
        """
        try:
            return run(classify_job.request.id, texts)
        except cancellation.Cancelled:
            raise Ignore() from None  # its cancelled state is stored: store nothing else, acknowledge

    # Counted once the result is stored: Celery sends these signals after storing it.
    @signals.task_success.connect
    def _count_success(sender=None, **_):
        if sender.name == contract.CLASSIFY_TASK:
            metrics.finished(sender.request, True)
            finished(sender.request.id)

    @signals.task_failure.connect
    def _count_failure(sender=None, **_):
        if sender.name == contract.CLASSIFY_TASK:
            metrics.finished(sender.request, False)
            finished(sender.request.id)
