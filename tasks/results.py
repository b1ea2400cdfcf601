"""Store finished jobs' states: every job of a batch in one round trip, two commands per job.

The workers write each job's state themselves, in the format of Celery's Redis
result backend (wire.success_state / failure_state: the API and Flower's
readers see no difference), instead of through the backend: Celery's
store_result reads the key before writing it (a GET) and writes it in a
MULTI/EXEC transaction, five commands and a round trip per job where SET and
PUBLISH in one pipeline for the whole batch do. The classify task is declared
with ignore_result so that Celery does not store them a second time.

As Celery's ``result_backend_always_retry`` did, a store that cannot reach Redis
is retried until Redis is back: the jobs are acknowledged only after their
results are stored, so giving up here would either lose them or run them again.

With replication (INFERQ_REDIS_SENTINELS and INFERQ_REDIS_MIN_REPLICAS), the same
round trip ends with a WAIT, and a store that fewer replicas acknowledged in time
is retried likewise (the whole pipeline: WAIT waits for its own connection's
writes): the jobs are acknowledged only once their results would survive the
primary's loss. While no replica answers, workers hold their finished jobs and take
no new ones; the API refuses new jobs (503) meanwhile.
"""
from __future__ import annotations

import json
import logging
import time
import traceback
from datetime import UTC, datetime

import redis

from inferq import contract
from inferq.broker import wire
from inferq.settings import Worker, current
from inferq.tasks import clients

log = logging.getLogger(__name__)

RETRY_SECONDS = 0.5
"""Pause between attempts to store results while Redis is unreachable."""

_REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError, OSError)

CANCELLED = "cancelled"
"""The outcome of a job a DELETE cancelled: its state is Celery's REVOKED (the API shows "cancelled")."""

Outcome = contract.JobResult | BaseException | str
"""What a job ended with: its result, the exception that failed it, or CANCELLED."""

def state(job_id: str, outcome: Outcome) -> dict:
    """The state stored for a job that ended with outcome."""
    done = datetime.now(UTC).isoformat()
    if outcome == CANCELLED:
        return wire.revoked_state(job_id, "cancelled", done)
    if isinstance(outcome, BaseException):
        return wire.failure_state(job_id, type(outcome).__name__, str(outcome), type(outcome).__module__,
                                      "".join(traceback.format_exception(outcome)), done)
    return wire.success_state(job_id, outcome, done)  # type: ignore[arg-type]


def store(outcomes: list[tuple[str, Outcome]]) -> None:
    """Store (SET with the results' TTL) and publish (for the API's long-polls) each job's state, in one round trip."""
    link = current(Worker).redis
    replicas = link.replicas_to_wait
    states = [(wire.result_key(job_id), json.dumps(state(job_id, outcome))) for job_id, outcome in outcomes]
    warned = False
    while True:
        try:
            with clients.backend().pipeline(transaction=False) as pipe:  # a pipeline is spent by execute(): one per try
                for key, value in states:
                    pipe.set(key, value, ex=link.result_ttl)
                    pipe.publish(key, value)
                if replicas:
                    pipe.wait(replicas, int(link.replica_timeout * 1000))
                replies = pipe.execute()
            if not replicas or int(replies[-1]) >= replicas:
                return
            if not warned:
                log.warning("%d job result(s) reached %s of %d replica(s) in %gs; storing again until enough do",
                            len(outcomes), replies[-1], replicas, link.replica_timeout)
                warned = True
        except _REDIS_DOWN as exc:
            if not warned:
                log.warning("cannot store %d job result(s) (%s: Redis unreachable); retrying until it is back",
                            len(outcomes), type(exc).__name__)
                warned = True
        time.sleep(RETRY_SECONDS)
