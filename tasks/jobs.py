"""The inference task: unpack the message, call the plain function, report."""
from __future__ import annotations

import time

from inferq.celeryconfig import SETTINGS
from inferq.tasks.celery_app import app
from inferq.tasks import deliveries, faults, inference, worker

CLASSIFY_TASK = "inferq.classify"


def admit(job_id: str | None, texts: list[str]) -> None:
    """Checks every job passes before inference, alone or in a batch."""
    deliveries.admit(job_id, worker.hostname())  # poison-job guard (issue 6), and "running"
    faults.inject(texts)  # test-only, off unless INFERQ_TEST_FAULTS=1


def run(job_id: str | None, texts: list[str]) -> dict:
    """Classify one job's texts; the result says which model, which worker and when."""
    admit(job_id, texts)
    loaded = worker.current_model()
    started_at = time.time()
    results = inference.classify(loaded, texts)
    finished_at = time.time()
    return {
        "model": loaded.info,
        "results": results,
        "started_at": started_at,
        "finished_at": finished_at,
        "worker": worker.identity(),
    }


if SETTINGS.batch_size > 1:
    from inferq.tasks.batching import ClassifyBatches, run_batch

    @app.task(name=CLASSIFY_TASK, base=ClassifyBatches)
    def classify_job(requests) -> int:
        """Classify up to INFERQ_BATCH_SIZE waiting jobs together, storing each job's result."""
        return run_batch(classify_job, requests, admit)
else:
    @app.task(name=CLASSIFY_TASK)
    def classify_job(texts: list[str], queued_at: float | None = None) -> dict:
        """Classify a job's texts; the result says which model, which worker and when.

        queued_at: when the API accepted the job (for the latency metric, tasks/metrics.py).
        """
        return run(classify_job.request.id, texts)
