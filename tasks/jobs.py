"""The inference task: unpack the message, take the jobs waiting behind it, classify, report.

The task has one contract (contract.py): the name CLASSIFY_TASK, the message of
classify_message, and a JobResult stored per job. INFERQ_BATCH_SIZE only
chooses how many waiting jobs a worker may run with it in one forward pass
(tasks/batching.py); 1 turns that off.
"""
from __future__ import annotations

import logging
import time
import traceback
from typing import Any

from celery import signals

from inferq import contract
from inferq.celery_app import app
from inferq.settings import Worker, current
from inferq.tasks import batching, deliveries, faults, inference, metrics, worker

log = logging.getLogger(__name__)


def admit(job_id: str | None, texts: list[str]) -> int:
    """Checks a delivered job passes before inference; returns its delivery count (0: run eagerly)."""
    count = deliveries.admit(job_id, worker.hostname())  # poison-job guard, and "running"
    faults.inject(texts)  # test-only, off unless INFERQ_TEST_FAULTS=1
    return count


def run(job_id: str | None, texts: list[str]) -> contract.JobResult:
    """Classify one job's texts; the result says which model, which worker and when."""
    admit(job_id, texts)
    return _classify_alone(texts)


def _classify_alone(texts: list[str]) -> contract.JobResult:
    loaded = worker.current_model()
    started_at = time.time()
    results = inference.classify(loaded, texts)
    return _result(loaded, results, started_at, time.time(), batch=1)


def _result(loaded: Any, results: list[contract.TextResult], started_at: float, finished_at: float,
            batch: int) -> contract.JobResult:
    return {"model": loaded.info, "results": results, "started_at": started_at, "finished_at": finished_at,
            "worker": {**worker.identity(), "batch": batch}}


@app.task(name=contract.CLASSIFY_TASK, bind=True)
def classify_job(self, texts: list[str], queued_at: float | None = None) -> contract.JobResult:
    """Classify a job's texts, with the jobs waiting behind it; the result says which model, which worker and when.

    queued_at: when the API accepted the job (for the latency metric, tasks/metrics.py).
    """
    count = admit(self.request.id, texts)
    settings = current(Worker)
    mates: list[batching.TakenJob] = []
    # A redelivered job runs alone: its last run may have killed its worker.
    if count == 1 and settings.batch_size > 1:
        queue = (self.request.delivery_info or {}).get("routing_key") or settings.queue
        try:
            mates = batching.take_waiting(deliveries.client(), queue, settings.batch_size - 1,
                                          worker.hostname(), settings.result_ttl)
        except Exception as exc:  # Redis away: run this job alone; the others stay queued
            log.warning("could not take waiting jobs into a batch: %s", exc)
    if not mates:
        return _classify_alone(texts)
    return _run_batch(self, texts, mates)


def _run_batch(task: Any, texts: list[str], mates: list[batching.TakenJob]) -> contract.JobResult:
    """Run this job and its batch-mates in shared forward passes; store and acknowledge the mates, return ours."""
    host = worker.hostname()
    ready: list[batching.TakenJob] = []
    failed: list[tuple[batching.TakenJob, BaseException]] = []
    for mate in mates:
        batching.events.send(host, "task-received", mate.job_id, name=contract.CLASSIFY_TASK,
                             args=mate.message["headers"].get("argsrepr", ""),
                             kwargs=mate.message["headers"].get("kwargsrepr", ""),
                             retries=0, eta=None, expires=None, root_id=mate.job_id, parent_id=None)
        try:
            faults.inject(mate.texts)  # test-only: the checks a delivered job passes in admit()
        except Exception as exc:  # one bad job fails alone, the batch goes on
            failed.append((mate, exc))
            continue
        batching.events.send(host, "task-started", mate.job_id)
        ready.append(mate)

    loaded = worker.current_model()
    size = len(ready) + 1
    started_at = time.time()
    try:
        outputs = inference.classify_jobs(loaded, [texts, *(m.texts for m in ready)])
        finished_at = time.time()
        own: contract.JobResult | BaseException = _result(loaded, outputs[0], started_at, finished_at, size)
        mate_results: list[Any] = [_result(loaded, out, started_at, finished_at, size) for out in outputs[1:]]
    except Exception:
        # Do not let one job's failure fail the others: run each alone.
        log.exception("batched inference failed; running the %d jobs one by one", size)
        own = _outcome(lambda: _classify_alone(texts))
        mate_results = [_outcome(lambda m=m: _classify_alone(m.texts)) for m in ready]

    _store(task, host, [*failed, *zip(ready, mate_results)])
    if isinstance(own, BaseException):
        raise own
    return own


def _outcome(run_job: Any) -> Any:
    try:
        return run_job()
    except Exception as exc:
        return exc


def _store(task: Any, host: str, outcomes: list[tuple[batching.TakenJob, Any]]) -> None:
    """Store each batch-mate's result or failure, then acknowledge them all and count them."""
    backend = task.backend
    finished = []
    for mate, outcome in outcomes:
        if isinstance(outcome, BaseException):
            backend.mark_as_failure(mate.job_id, outcome, traceback="".join(traceback.format_exception(outcome)))
            batching.events.send(host, "task-failed", mate.job_id, exception=repr(outcome), traceback="")
        else:
            backend.mark_as_done(mate.job_id, outcome)
            batching.events.send(host, "task-succeeded", mate.job_id, result=repr(outcome["results"])[:200],
                                 runtime=outcome["finished_at"] - outcome["started_at"])
        finished.append((not isinstance(outcome, BaseException), mate.queued_at))
    batching.acknowledge(deliveries.client(), [mate for mate, _ in outcomes])
    batching.events.flush()
    metrics.finished_many(finished)


# The job Celery delivered is counted once its result is stored: Celery sends these signals after storing it.
@signals.task_success.connect
def _count_success(sender=None, **_):
    if sender.name == contract.CLASSIFY_TASK:
        metrics.finished(sender.request, True)


@signals.task_failure.connect
def _count_failure(sender=None, **_):
    if sender.name == contract.CLASSIFY_TASK:
        metrics.finished(sender.request, False)
