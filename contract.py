"""The contract between the API and the workers: the task, its message, its result, and every Redis key.

The API imports this module and the settings, never ``tasks``: it enqueues by task
name, reads results and records by key, and needs neither the model code nor the
worker's dependencies. The workers import it too, so each name is written once.
The formats and keys of Celery and kombu are broker/wire.py's.
"""
from __future__ import annotations

from typing import Any, TypedDict

# --- the task ---

CLASSIFY_TASK = "inferq.classify"
"""The one task: classify a job's texts."""


class ClassifyMessage(TypedDict):
    """What the API sends: Celery's args and kwargs of CLASSIFY_TASK."""

    args: list[list[str]]  # [texts]
    kwargs: dict[str, float]  # {"queued_at": unix seconds}: the latency metric needs no read of the record


def classify_message(texts: list[str], queued_at: float) -> ClassifyMessage:
    """The message of one job."""
    return {"args": [texts], "kwargs": {"queued_at": queued_at}}


DELIVER_CALLBACK_TASK = "inferq.deliver_callback"
"""POST a finished job's view to its callback URL (tasks/callbacks.py); args [job_id], kwargs {"first_at"}."""

# --- the priority lanes ---

INTERACTIVE, BULK = "interactive", "bulk"
"""The two lanes: jobs of one text, and bulk jobs (more than one text, or "priority": "low")."""

BULK_SUFFIX = ".bulk"
"""The bulk lane's queue is INFERQ_QUEUE + this; the interactive lane's is INFERQ_QUEUE itself."""


def lane_queues(queue: str) -> dict[str, str]:
    """Each lane's queue (a Redis list of that name), interactive first: the order workers consume them in."""
    return {INTERACTIVE: queue, BULK: queue + BULK_SUFFIX}


def lane_of(n_texts: int, priority: str = "normal") -> str:
    """The lane of a job: one text at normal priority is interactive, anything else bulk."""
    return INTERACTIVE if n_texts == 1 and priority != "low" else BULK


CALLBACK_HEADER = "inferq_callback"
"""A header of inferq's own, true in the message of a job submitted with a callback_url: its worker queues
the callback's delivery once the job is final, and only then reads its callback state."""

TEXTS_HEADER = "inferq_texts"
"""A header of inferq's own in each job's message: how many texts it carries, so that a worker can fill a
batch up to INFERQ_BATCH_SIZE texts without decoding the bodies (tasks/batching.py). A message without it
(sent by send_task) counts as one text."""

DELIVERY_HEADER = "inferq_delivery"
"""A header the workers' take adds to the message it hands Celery: which delivery of its job this is (1: the
first; a message given back after its worker died counts one more), for the poison-job guard."""

CANCEL_HEADER = "inferq_cancel"
"""A header the take adds when the job it hands Celery was cancelled before it was taken: its cancel mark
(contract.CANCEL_KEY), read in the take's own round trip."""

class TextResult(TypedDict):
    """One text's answer."""

    label: str
    probabilities: dict[str, float]  # label -> probability, summing to 1, in the model's label order


class WorkerInfo(TypedDict, total=False):
    """Who ran a job."""

    hostname: str
    pid: int
    model_loads: int
    jobs_done: int
    batch: int  # jobs that shared the forward pass (micro-batching)


class JobResult(TypedDict):
    """What a worker stores for a finished job (Celery's result of CLASSIFY_TASK)."""

    model: dict[str, Any]  # name, precision, weights ("pretrained" or "random"), warning
    results: list[TextResult]  # in the job's text order
    started_at: float
    finished_at: float
    worker: WorkerInfo


# --- inferq's Redis keys ---

JOB_KEY = "inferq:job:{}"
"""Per job (string, JSON): the API's record, {"queued_at", "texts", "lane", "owner"?, "callback_url"?};
expires with the result.
Celery reports any unknown id as PENDING: an id without a record is one the API never issued."""

DELIVERIES_KEY = "inferq:deliveries:{}"
"""Per job (integer): how many times a worker has taken it, written only once it was given back after its
worker died (a first delivery writes nothing): the poison-job guard."""

HOLDING_KEY = "inferq:holding:{}"
"""Per worker name (set): the delivery tags it holds, so that a worker restarted under that name gives back
at once what its dead predecessor held (tasks/recovery.py); and HOLDING_PLACEHOLDER, which keeps the set, and
the expiry its worker renews at every heartbeat, while it holds nothing."""

HOLDING_PLACEHOLDER = "-"
"""The member of every holding set that is no delivery tag (a set emptied by Redis would lose its expiry)."""

WAKE_KEY = "inferq:wake"
"""List: idle workers block on it; one element wakes one (broker/wake.py)."""

MALFORMED_KEY = "inferq:malformed"
"""List: messages found in a lane that are not kombu task messages, set aside by the take (never run)."""

CANCEL_KEY = "inferq:cancel:{}"
"""Per job (string): a DELETE was accepted: "queued" (cancelled before any worker started it) or "running"
(cancel requested while it ran). Workers skip such a job, or discard its result (tasks/cancellation.py)."""

CALLBACK_KEY = "inferq:callback:{}"
"""Per job with a callback_url (string, JSON): {"url", "state": "pending" | "delivered" | "gave_up", "attempts",
"delivered_at"?, "last_error"?}; written by the API at submit, then only by the delivery task (tasks/callbacks.py)."""

WORKERS_KEY = "inferq:workers"
"""Sorted set: worker hostname -> time of its last heartbeat (/readyz, /metrics)."""

IDEMPOTENCY_KEY = "inferq:idempotency:{}"
"""Per (API key, Idempotency-Key) digest (string, JSON): {"job_id", "body"} of the job it created."""

METRICS_PREFIX = "inferq:metrics:"
SUBMITTED_KEY = METRICS_PREFIX + "submitted"
"""Counter: jobs the API accepted."""
SUCCEEDED_KEY = METRICS_PREFIX + "succeeded"
"""Counter: jobs whose result a worker stored."""
FAILED_KEY = METRICS_PREFIX + "failed"
"""Counter: jobs that ended failed."""
CANCELLED_KEY = METRICS_PREFIX + "cancelled"
"""Counter: jobs cancelled (DELETE accepted; counted once, by the API)."""
LATENCY_KEY = METRICS_PREFIX + "latency"
"""Hash: per bucket upper bound (seconds as text, "+Inf" last) the jobs in it, plus "sum" and "count"."""

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
"""Latency bucket bounds in seconds: from a tiny model's milliseconds to a backlog's minutes."""
