"""The inference task: unpack the message, take the jobs waiting behind it, classify, report.

The task has one contract (contract.py): the name CLASSIFY_TASK, the message of
classify_message, and a JobResult stored per job. INFERQ_BATCH_SIZE only
chooses how many waiting jobs a worker may run with it in one forward pass
(tasks/batching.py); 1 turns that off.
"""
from __future__ import annotations

import logging
import time
from typing import Any

from celery.exceptions import Reject

from inferq import contract
from inferq.celery_app import app
from inferq.settings import Worker, current
from inferq.tasks import batching, deliveries, faults, inference, metrics, results, worker

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


# ignore_result: the task stores every job's state itself, its own and its batch-mates', in one round
# trip (tasks/results.py); Celery storing it again would cost a read and a transaction per job.
@app.task(name=contract.CLASSIFY_TASK, bind=True, ignore_result=True)
def classify_job(self, texts: list[str], queued_at: float | None = None) -> contract.JobResult:
    """Classify a job's texts, with the jobs waiting behind it; the result says which model, which worker and when.

    queued_at: when the API accepted the job (for the latency metric, tasks/metrics.py).
    """
    job_id = self.request.id
    try:
        count = admit(job_id, texts)
    except Reject:
        raise  # Redis away: given back to the queue, nothing to store
    except Exception as exc:  # a poison job, or one its checks refuse: it fails alone
        _finish([(job_id, queued_at, exc)])
        raise
    mates = _take_mates(self.request, count)
    try:
        outcomes = _run(job_id, texts, queued_at, mates) if mates else [(job_id, queued_at, _outcome(
            lambda: _classify_alone(texts)))]
        _finish(outcomes)
    except BaseException:
        # Interrupted (SIGTERM gives the job back, tasks/shutdown.py) or broken before every
        # result was stored: Celery gives this job back; the batch-mates go back too, at once.
        batching.give_back(deliveries.client(), mates)
        raise
    batching.acknowledge(deliveries.client(), mates)
    own = outcomes[0][2]
    if isinstance(own, BaseException):
        raise own
    return own


def _take_mates(request: Any, count: int) -> list[batching.TakenJob]:
    """The jobs waiting behind this one, up to the batch size; none for a redelivered job (it may be a poison)."""
    settings = current(Worker)
    if count != 1 or settings.batch_size <= 1:
        return []
    queue = (request.delivery_info or {}).get("routing_key") or settings.queue
    try:
        return batching.take_waiting(deliveries.client(), queue, settings.batch_size - 1,
                                     worker.hostname(), settings.result_ttl)
    except Exception as exc:  # Redis away: run this job alone; the others stay queued
        log.warning("could not take waiting jobs into a batch: %s", exc)
        return []


def _run(job_id: str, texts: list[str], queued_at: float | None,
         mates: list[batching.TakenJob]) -> list[tuple[str, float | None, Any]]:
    """Run this job and its batch-mates in shared forward passes: (job id, queued_at, result or exception) each."""
    host = worker.hostname()
    outcomes: list[tuple[str, float | None, Any]] = []
    ready: list[batching.TakenJob] = []
    for mate in mates:
        batching.events.send(host, "task-received", mate.job_id, name=contract.CLASSIFY_TASK,
                             args=mate.message["headers"].get("argsrepr", ""),
                             kwargs=mate.message["headers"].get("kwargsrepr", ""),
                             retries=0, eta=None, expires=None, root_id=mate.job_id, parent_id=None)
        try:
            faults.inject(mate.texts)  # test-only: the checks a delivered job passes in admit()
        except Exception as exc:  # one bad job fails alone, the batch goes on
            outcomes.append((mate.job_id, mate.queued_at, exc))
            continue
        batching.events.send(host, "task-started", mate.job_id)
        ready.append(mate)

    loaded = worker.current_model()
    size = len(ready) + 1
    started_at = time.time()
    try:
        outputs = inference.classify_jobs(loaded, [texts, *(m.texts for m in ready)])
        finished_at = time.time()
        results: list[Any] = [_result(loaded, out, started_at, finished_at, size) for out in outputs]
    except Exception:
        # Do not let one job's failure fail the others: run each alone.
        log.exception("batched inference failed; running the %d jobs one by one", size)
        results = [_outcome(lambda t=t: _classify_alone(t)) for t in [texts, *(m.texts for m in ready)]]
    outcomes = [(job_id, queued_at, results[0]), *outcomes,
                *((m.job_id, m.queued_at, r) for m, r in zip(ready, results[1:]))]
    for mate_id, _, outcome in outcomes[1:]:
        if isinstance(outcome, BaseException):
            batching.events.send(host, "task-failed", mate_id, exception=repr(outcome), traceback="")
        else:
            batching.events.send(host, "task-succeeded", mate_id, result=repr(outcome["results"])[:200],
                                 runtime=outcome["finished_at"] - outcome["started_at"])
    return outcomes


def _outcome(run_job: Any) -> Any:
    try:
        return run_job()
    except Exception as exc:
        return exc


def _finish(outcomes: list[tuple[str, float | None, Any]]) -> None:
    """Store every job's state (one round trip), send the batch's task events, count the jobs (one more)."""
    results.store([(job_id, outcome) for job_id, _, outcome in outcomes])
    batching.events.flush()
    metrics.finished_many([(not isinstance(outcome, BaseException), queued_at) for _, queued_at, outcome in outcomes])
