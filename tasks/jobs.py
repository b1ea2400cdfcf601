"""The inference task: unpack the message, take the jobs waiting behind it, classify, report.

The task has one contract (contract.py): the name CLASSIFY_TASK, the message of
classify_message, and a state stored per job (tasks/results.py). INFERQ_BATCH_SIZE
only chooses how many texts of the jobs waiting behind it a worker may run with
it in one forward pass (tasks/batching.py); 1 turns that off.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from celery.exceptions import Ignore, Reject

from inferq import contract
from inferq.celery_app import app
from inferq.settings import Worker, current
from inferq.tasks import batching, callbacks, cancellation, deliveries, faults, inference, metrics, results, worker

log = logging.getLogger(__name__)


def _classify_alone(texts: list[str]) -> contract.JobResult:
    loaded = worker.current_model()
    started_at = time.time()
    results = inference.classify(loaded, texts)
    return _result(loaded, results, started_at, time.time(), batch=1)


def _result(loaded: Any, results: list[contract.TextResult], started_at: float, finished_at: float,
            batch: int) -> contract.JobResult:
    return {"model": loaded.info, "results": results, "started_at": started_at, "finished_at": finished_at,
            "worker": {**worker.identity(), "batch": batch}}


@dataclass
class _Job:
    """One job of a batch: the one Celery delivered, or a batch-mate taken behind it."""

    job_id: str
    texts: list[str]
    queued_at: float | None
    mate: batching.TakenJob | None = None
    callback: bool = False  # submitted with a callback_url (the message's header says so)


class _Cancelled(Exception):
    """A DELETE cancelled the job: before it ran (skipped) or while it ran (its result discarded)."""

    def __init__(self, why: str, mark: bytes):
        super().__init__(why)
        # "queued": the API cancelled it before any worker marked it running, and queued its callback itself.
        self.callback_sent = mark == cancellation.QUEUED


# ignore_result: the task stores every job's state itself, its own and its batch-mates', in one round
# trip (tasks/results.py); Celery storing it again would cost a read and a transaction per job.
@app.task(name=contract.CLASSIFY_TASK, bind=True, ignore_result=True)
def classify_job(self, texts: list[str], queued_at: float | None = None) -> contract.JobResult:
    """Classify a job's texts, with the jobs waiting behind it; the result says which model, which worker and when.

    queued_at: when the API accepted the job (for the latency metric, tasks/metrics.py).
    """
    job_id = self.request.id
    settings = current(Worker)
    queue = (self.request.delivery_info or {}).get("routing_key") or settings.queue
    mates: list[batching.TakenJob] = []

    def start() -> int:  # one round trip: the delivery count, the running mark and the batch-mates
        count, taken = batching.start(deliveries.client(), job_id, queue, settings.batch_size - len(texts),
                                      worker.hostname(), settings.result_ttl)
        mates.extend(taken)
        return count

    try:
        deliveries.admit(job_id, start)  # raises for a poison job (a redelivery: it took no batch-mates)
    except Reject:
        raise  # Redis away: given back to the queue, nothing to store
    except Exception as exc:
        _finish([(job_id, queued_at, exc)])
        raise
    jobs = [_Job(job_id, texts, queued_at, None, bool(getattr(self.request, contract.CALLBACK_HEADER, False))),
            *(_Job(m.job_id, m.texts, m.queued_at, m, bool(m.message["headers"].get(contract.CALLBACK_HEADER)))
              for m in mates)]
    try:
        outcomes = _run(jobs)
        _finish(outcomes)
    except BaseException:
        # Interrupted (SIGTERM gives the job back, tasks/shutdown.py) or broken before every
        # result was stored: Celery gives this job back; the batch-mates go back too, at once.
        batching.give_back(deliveries.client(), mates)
        raise
    batching.acknowledge(deliveries.client(), mates)
    callbacks.jobs_finished([job.job_id for job, (_, _, outcome) in zip(jobs, outcomes)
                             if job.callback and not (isinstance(outcome, _Cancelled) and outcome.callback_sent)])
    own = outcomes[0][2]
    if isinstance(own, _Cancelled):
        raise Ignore()  # its cancelled state is stored: Celery stores nothing and acknowledges
    if isinstance(own, BaseException):
        raise own
    return own


def _run(jobs: list[_Job]) -> list[tuple[str, float | None, Any]]:
    """Run the jobs in shared forward passes; return (job id, queued_at, result or exception) for each, in order."""
    host = worker.hostname()
    ready: list[_Job] = []
    # A job is marked running (the start script) before its cancel mark is read, here: a DELETE either
    # found it running (its result is discarded below) or left its mark first (it is skipped).
    refused: dict[str, BaseException] = {
        job_id: _Cancelled("cancelled before it ran: skipped", mark)
        for job_id, mark in cancellation.cancelled(job.job_id for job in jobs).items()}
    for job in jobs:
        if job.mate is not None:  # Celery sent the delivered job's events itself
            headers = job.mate.message["headers"]
            batching.events.send(host, "task-received", job.job_id, name=contract.CLASSIFY_TASK,
                                 args=headers.get("argsrepr", ""), kwargs=headers.get("kwargsrepr", ""),
                                 retries=0, eta=None, expires=None, root_id=job.job_id, parent_id=None)
        if job.job_id in refused:
            continue
        try:
            faults.inject(job.texts)  # test-only, off unless INFERQ_TEST_FAULTS=1
        except Exception as exc:  # one bad job fails alone, the batch goes on
            refused[job.job_id] = exc
            continue
        if job.mate is not None:
            batching.events.send(host, "task-started", job.job_id)
        ready.append(job)

    outputs: dict[str, Any] = {}
    if ready:
        loaded = worker.current_model()
        started_at = time.time()
        try:
            texts = inference.classify_jobs(loaded, [job.texts for job in ready])
            finished_at = time.time()
            outputs = {job.job_id: _result(loaded, out, started_at, finished_at, len(ready))
                       for job, out in zip(ready, texts)}
        except Exception:
            # Do not let one job's failure fail the others: run each alone.
            log.exception("batched inference failed; running the %d jobs one by one", len(ready))
            outputs = {job.job_id: _outcome(lambda t=job.texts: _classify_alone(t)) for job in ready}
    for job_id, mark in cancellation.cancelled(job.job_id for job in ready).items():
        refused[job_id] = _Cancelled("cancelled while it ran: its result is discarded", mark)
    outcomes = [(job.job_id, job.queued_at, refused[job.job_id] if job.job_id in refused else outputs[job.job_id])
                for job in jobs]
    for job, (_, _, outcome) in zip(jobs, outcomes):
        if isinstance(outcome, _Cancelled):  # Flower shows it revoked, the delivered job included
            log.info("job %s %s", job.job_id, outcome)
            batching.events.send(host, "task-revoked", job.job_id, terminated=False, signum=None, expired=False)
            continue
        if job.mate is None:
            continue
        if isinstance(outcome, BaseException):
            batching.events.send(host, "task-failed", job.job_id, exception=repr(outcome), traceback="")
        else:
            batching.events.send(host, "task-succeeded", job.job_id, result=repr(outcome["results"])[:200],
                                 runtime=outcome["finished_at"] - outcome["started_at"])
    return outcomes


def _outcome(run_job: Any) -> Any:
    try:
        return run_job()
    except Exception as exc:
        return exc


def _finish(outcomes: list[tuple[str, float | None, Any]]) -> None:
    """Store every job's state (one round trip), send the batch's task events, count the jobs (one more)."""
    results.store([(job_id, results.CANCELLED if isinstance(outcome, _Cancelled) else outcome)
                   for job_id, _, outcome in outcomes])
    batching.events.flush()
    # Cancelled jobs are counted by the API when it accepts the DELETE.
    metrics.finished_many([(not isinstance(outcome, BaseException), queued_at)
                           for _, queued_at, outcome in outcomes if not isinstance(outcome, _Cancelled)])
