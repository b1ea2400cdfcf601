"""Run the jobs a worker holds in forward passes of at most INFERQ_BATCH_SIZE texts, and finish each job.

A batch is the job Celery delivered and the batch-mates taken behind it: one
pass when their texts fit. A job of more texts runs in passes of at most the
batch size, its texts ordered by length first (so each pass pads little); before
every pass after the first, the interactive jobs waiting are taken and run in a
pass of their own, then finished at once (tasks/batching.py). Finishing a set of
jobs is: their cancel marks read again, their states stored (one round trip),
Flower told, the batch-mates acknowledged, their metrics counted, their callbacks
queued. The job Celery delivered is acknowledged by Celery once the task returns.
"""
from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from inferq import contract
from inferq.broker import wire
from inferq.broker.holdings import holdings
from inferq.model import inference
from inferq.tasks import batching, callbacks, cancellation, clients, faults, metrics, results, worker
from inferq.tasks.events import events

log = logging.getLogger(__name__)


@dataclass
class Job:
    """One job of a batch: the one Celery delivered (taken is None), or one the task took."""

    job_id: str
    texts: list[str]
    queued_at: float | None
    callback: bool  # submitted with a callback_url (its message's header says so)
    taken: batching.TakenJob | None = None
    cancel_mark: bytes | None = None  # read by the take: cancelled before it was taken

    @classmethod
    def of(cls, taken: batching.TakenJob) -> Job:
        return cls(taken.job_id, taken.texts, taken.queued_at, bool(taken.headers.get(contract.CALLBACK_HEADER)),
                   taken, taken.cancel_mark)


class Cancelled(Exception):
    """A DELETE cancelled the job: before it ran (skipped) or while it ran (its result discarded)."""

    def __init__(self, why: str, mark: bytes):
        super().__init__(why)
        # "queued": the API cancelled it before any worker took it, and queued its callback itself.
        self.callback_sent = mark == cancellation.QUEUED


Outcome = Any
"""A job's result (contract.JobResult), the exception that failed it, or Cancelled."""


def _result(loaded: Any, results: list[contract.TextResult], started_at: float, finished_at: float,
            batch: int) -> contract.JobResult:
    return {"model": loaded.info, "results": results, "started_at": started_at, "finished_at": finished_at,
            "worker": {**worker.identity(), "batch": batch}}


class Batch:
    """The jobs one task runs: the delivered job first, then the batch-mates, and newcomers between passes."""

    def __init__(self, jobs: list[Job], batch_size: int, take_interactive: Callable):
        self.jobs = jobs
        self.batch_size = batch_size
        self._take_interactive = take_interactive  # room -> the interactive jobs waiting that fit, taken
        self.held: dict[str, Job] = {job.job_id: job for job in jobs if job.taken is not None}
        self.host = worker.hostname()

    def unfinished(self) -> list[Any]:
        """What the task took and has not finished: given back if the batch is interrupted."""
        return [job.taken.held for job in self.held.values() if job.taken is not None]

    def run(self) -> Outcome:
        """Run every job to its outcome, finishing each as soon as it has one; return the delivered job's."""
        first = self.jobs[0]
        if len(first.texts) <= self.batch_size:
            outcomes = self._pass(self.jobs)
            self.finish(self.jobs, outcomes)
            return outcomes[0]
        outcome = self._long(first)
        self.finish([first], [outcome])
        return outcome

    def _long(self, job: Job) -> Outcome:
        """A job of more texts than one pass holds: passes of its texts by length, interactive work between."""
        if job.cancel_mark is not None:
            return Cancelled("cancelled before it ran: skipped", job.cancel_mark)
        try:
            faults.inject(job.texts)  # test-only, off unless INFERQ_TEST_FAULTS=1
        except Exception as exc:
            return exc
        loaded = worker.current_model()
        order = sorted(range(len(job.texts)), key=lambda i: len(job.texts[i]))
        answers: list[Any] = [None] * len(job.texts)
        started_at = time.time()
        for start in range(0, len(order), self.batch_size):
            if start:
                self._serve_interactive()
                marks = cancellation.cancelled([job.job_id])
                if job.job_id in marks:
                    return Cancelled("cancelled while it ran: its result is discarded", marks[job.job_id])
            chunk = order[start:start + self.batch_size]
            began = time.monotonic()
            try:
                for i, answer in zip(chunk, inference.classify(loaded, [job.texts[i] for i in chunk])):
                    answers[i] = answer
                faults.slow_pass(began)  # test-only, off unless INFERQ_TEST_FAULTS=1
            except Exception as exc:
                log.exception("a forward pass of job %s failed", job.job_id)
                return exc
        marks = cancellation.cancelled([job.job_id])
        if job.job_id in marks:
            return Cancelled("cancelled while it ran: its result is discarded", marks[job.job_id])
        return _result(loaded, answers, started_at, time.time(), 1)

    def _serve_interactive(self) -> None:
        """Take the interactive jobs waiting and run them, in a pass of their own, to their end."""
        newcomers = [Job.of(taken) for taken in self._take_interactive(self.batch_size)]
        if not newcomers:
            return
        self.held.update((job.job_id, job) for job in newcomers)
        self.finish(newcomers, self._pass(newcomers))

    def _pass(self, jobs: list[Job]) -> list[Outcome]:
        """Run jobs whose texts fit one pass; return each one's outcome, in order."""
        # The take read each job's cancel mark in the same atomic step as it recorded the job taken: a
        # DELETE either found it taken (its result is discarded below) or left its mark first (skipped).
        refused: dict[str, Outcome] = {
            job.job_id: Cancelled("cancelled before it ran: skipped", job.cancel_mark)
            for job in jobs if job.cancel_mark is not None}
        ready: list[Job] = []
        for job in jobs:
            if job.taken is not None:  # Celery sent the delivered job's events itself
                events.send(self.host, "task-received", job.job_id, **wire.received_event(job.taken.headers))
            if job.job_id in refused:
                continue
            try:
                faults.inject(job.texts)  # test-only, off unless INFERQ_TEST_FAULTS=1
            except Exception as exc:  # one bad job fails alone, the batch goes on
                refused[job.job_id] = exc
                continue
            if job.taken is not None:
                events.send(self.host, "task-started", job.job_id)
            ready.append(job)

        outputs: dict[str, Outcome] = {}
        if ready:
            loaded = worker.current_model()
            started_at, began = time.time(), time.monotonic()
            try:
                answers = inference.classify_jobs(loaded, [job.texts for job in ready])
                faults.slow_pass(began)  # test-only, off unless INFERQ_TEST_FAULTS=1
                finished_at = time.time()
                outputs = {job.job_id: _result(loaded, out, started_at, finished_at, len(ready))
                           for job, out in zip(ready, answers)}
            except Exception:
                # Do not let one job's failure fail the others: run each alone.
                log.exception("batched inference failed; running the %d jobs one by one", len(ready))
                outputs = {job.job_id: _alone(loaded, job.texts) for job in ready}
        for job_id, mark in cancellation.cancelled(job.job_id for job in ready).items():
            refused[job_id] = Cancelled("cancelled while it ran: its result is discarded", mark)
        return [refused.get(job.job_id, outputs.get(job.job_id)) for job in jobs]

    def finish(self, jobs: list[Job], outcomes: list[Outcome]) -> None:
        """Store the jobs' states (one round trip), tell Flower, acknowledge what the task took, count, call back."""
        stored = [(job.job_id, results.CANCELLED if isinstance(outcome, Cancelled) else outcome)
                  for job, outcome in zip(jobs, outcomes)]
        results.store(stored)
        faults.record_runs(stored)  # test-only, off unless INFERQ_TEST_FAULTS=1
        for job, outcome in zip(jobs, outcomes):
            self._report(job, outcome)
            if isinstance(outcome, BaseException):
                # Stored with its traceback as text. The frames it holds would keep this batch (its texts,
                # results, jobs) alive in a cycle with the exception: drop them (celery#8882).
                traceback.clear_frames(outcome.__traceback__)
                outcome.__traceback__ = None
        events.flush()
        mates = [job for job in jobs if job.taken is not None]
        delivered = next((holdings.tag_of(job.job_id) for job in jobs if job.taken is None), None)
        holdings.acknowledge(clients.broker(), [job.taken.held.tag for job in mates],  # type: ignore[union-attr]
                             delivered)
        for job in mates:
            self.held.pop(job.job_id, None)
        # Cancelled jobs are counted by the API when it accepts the DELETE.
        metrics.finished_many([(not isinstance(outcome, BaseException), job.queued_at)
                               for job, outcome in zip(jobs, outcomes) if not isinstance(outcome, Cancelled)])
        callbacks.jobs_finished([job.job_id for job, outcome in zip(jobs, outcomes) if job.callback
                                 and not (isinstance(outcome, Cancelled) and outcome.callback_sent)])

    def _report(self, job: Job, outcome: Outcome) -> None:
        """Flower's event for a finished job (Celery reports the delivered job's success or failure itself)."""
        if isinstance(outcome, Cancelled):  # Flower shows it revoked, the delivered job included
            log.info("job %s %s", job.job_id, outcome)
            events.send(self.host, "task-revoked", job.job_id, **wire.revoked_event())
        elif job.taken is None:
            return
        elif isinstance(outcome, BaseException):
            events.send(self.host, "task-failed", job.job_id, **wire.failed_event(outcome))
        else:
            events.send(self.host, "task-succeeded", job.job_id,
                        **wire.succeeded_event(outcome["results"], outcome["finished_at"] - outcome["started_at"]))


def _alone(loaded: Any, texts: list[str]) -> Outcome:
    try:
        started_at = time.time()
        answers = inference.classify(loaded, texts)
        return _result(loaded, answers, started_at, time.time(), 1)
    except Exception as exc:
        return exc
