"""The inference task: unpack the message, call the plain function, report."""
from __future__ import annotations

import time

from tasks.celery_app import app
from tasks import inference, worker

CLASSIFY_TASK = "inferq.classify"


@app.task(name=CLASSIFY_TASK)
def classify_job(texts: list[str]) -> dict:
    """Classify a job's texts; the result says which model, which worker and when."""
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
