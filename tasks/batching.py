"""Micro-batching: a worker runs several waiting jobs as one forward pass.

Built on ``celery-batches``: the worker buffers up to ``INFERQ_BATCH_SIZE``
messages (its prefetch is raised to match, so that it can hold them) and
flushes the buffer when it is full or ``INFERQ_BATCH_WAIT_MS`` after the
timer starts, whichever comes first: a lone job waits at most that long.
Late acknowledgement holds: celery-batches acknowledges a batch's messages
only when this function has returned, and it returns only after every job's
result (or failure) is stored. A worker that dies mid-batch leaves all of the
batch's messages unacknowledged, and Redis gives them back.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from celery_batches import Batches

from inferq.settings import Worker, current
from inferq.tasks import cancellation, inference, metrics, worker

log = logging.getLogger(__name__)


class ClassifyBatches(Batches):
    """The classify task as a batch task: flush at B messages or after the wait bound."""

    flush_every = current(Worker).batch_size
    flush_interval = current(Worker).batch_wait_ms / 1000.0


def texts_of(request: Any) -> list[str]:
    """The texts of one buffered job, sent as args=[texts] or kwargs={"texts": ...}."""
    return request.args[0] if request.args else request.kwargs["texts"]


def run_batch(task: Any, requests: Sequence[Any], admit: Callable[[str, list[str]], None],
              finished: Callable[[str], None] = lambda job_id: None) -> int:
    """Classify a batch of jobs together and store each job's own result; return how many succeeded.

    finished(job_id): called once a job's final state is stored (its callback).
    """
    backend = task.backend
    ready = []
    for request in requests:
        try:
            texts = texts_of(request)
            admit(request.id, texts)
        except cancellation.Cancelled:
            continue  # cancelled before it ran: its state is stored, nothing else is
        except Exception as exc:  # one bad job fails alone, the batch goes on
            log.error("job %s refused: %r", request.id, exc)
            backend.mark_as_failure(request.id, exc, request=request)
            metrics.finished(request, False)
            finished(request.id)
            continue
        ready.append((request, texts))
    if not ready:
        return 0
    loaded = worker.current_model()
    started_at = time.time()
    try:
        outputs = inference.classify_jobs(loaded, [texts for _, texts in ready])
    except Exception:
        # Do not let one job's failure fail the others: run each alone.
        log.exception("batched inference failed; running the %d jobs one by one", len(ready))
        outputs = None
    finished_at = time.time()
    succeeded = 0
    for n, (request, texts) in enumerate(ready):
        try:
            if outputs is None:
                started_at = time.time()
                results = inference.classify(loaded, texts)
                finished_at = time.time()
            else:
                results = outputs[n]
        except Exception as exc:
            backend.mark_as_failure(request.id, exc, request=request)
            metrics.finished(request, False)
            finished(request.id)
            continue
        if cancellation.finish_cancelled(request.id):
            continue  # cancelled while it ran: its result is discarded
        backend.mark_as_done(request.id, {
            "model": loaded.info, "results": results, "started_at": started_at,
            "finished_at": finished_at, "worker": {**worker.identity(), "batch": len(ready)},
        }, request=request)
        metrics.finished(request, True)
        finished(request.id)
        succeeded += 1
    return succeeded
