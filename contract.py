"""The contract between the API and the workers: the task, its message, its result, and every Redis key.

The API imports this module and the settings, never ``tasks``: it enqueues by task
name, reads results and records by key, and needs neither the model code nor the
worker's dependencies. The workers import it too, so each name is written once.
Celery's and kombu's own keys are here as well: celeryconfig.py sets kombu's from
these names, and a test checks that Celery's result keys are what is written here.
"""
from __future__ import annotations

import base64
import json
import uuid
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

ARGSREPR_MAX = 1024
"""Characters of a job's texts that its message's argsrepr carries (what Flower shows), as Celery cuts them."""


def task_envelope(task: str, task_id: str, args: list, kwargs: dict, queue: str,
                  headers: dict[str, Any] | None = None, delivery_tag: str | None = None) -> str:
    """A task's message as it lies in its queue: Celery's task message (protocol 2) in kombu's Redis envelope.

    The API pushes this onto the queue's list itself (api/publisher.py) instead of
    calling Celery's send_task, whose producer also subscribes to and unsubscribes
    from the task's result channel (two Redis commands and most of the API's
    publishing CPU per job) for a result the API reads its own way.
    tests/api/test_publisher.py checks it against what send_task writes.
    headers: inferq's own, added to Celery's. delivery_tag: kombu's tag (default: a new uuid, as kombu makes).
    """
    body = json.dumps([args, kwargs, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}])
    return json.dumps({
        "body": base64.b64encode(body.encode()).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py", "task": task, "id": task_id, "shadow": None, "eta": None, "expires": None,
            "group": None, "group_index": None, "retries": 0, "timelimit": [None, None],
            "root_id": task_id, "parent_id": None,
            "argsrepr": repr(args)[:ARGSREPR_MAX], "kwargsrepr": repr(kwargs),
            # ignore_result: the worker stores each job's state itself (tasks/results.py); with False,
            # Celery would read the result key once more per job before leaving it alone.
            "origin": "inferq-api", "ignore_result": True, "replaced_task_nesting": 0,
            "stamped_headers": None, "stamps": {},
            **(headers or {}),
        },
        "properties": {
            "correlation_id": task_id, "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue}, "priority": 0,
            "body_encoding": "base64", "delivery_tag": delivery_tag or str(uuid.uuid4()),
        },
    })


def classify_envelope(job_id: str, texts: list[str], queued_at: float, queue: str, callback: bool = False) -> str:
    """The message of one job, as the API queues it (task_envelope), with its text count and callback flag.

    Its delivery tag is the job's id: while a worker holds the job, the job's id is a field of kombu's
    unacknowledged hash, which is how the API tells "running" from "queued" without a key of its own.
    """
    message = classify_message(texts, queued_at)
    return task_envelope(CLASSIFY_TASK, job_id, message["args"], dict(message["kwargs"]), queue,
                         {TEXTS_HEADER: len(texts), **({CALLBACK_HEADER: True} if callback else {})}, job_id)


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
at once what its dead predecessor held (tasks/recovery.py)."""

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

# --- Celery's and kombu's keys ---

RESULT_KEY_PREFIX = "celery-task-meta-"
"""Celery's Redis result backend: a job's state under RESULT_KEY_PREFIX + id, published on a channel of that name."""

UNACKED_KEY = "unacked"
"""kombu's hash of messages taken by a worker and not yet acknowledged (delivery tag -> message)."""

UNACKED_INDEX_KEY = "unacked_index"
"""kombu's sorted set of those delivery tags by time taken: what the visibility-timeout scan reads."""

UNACKED_MUTEX_KEY = "unacked_mutex"
"""kombu's lock around that scan."""

BINDING_KEY = "_kombu.binding.{}"
"""kombu's routing table of an exchange; a queue's waiting jobs are the Redis list named after the queue."""


def result_key(job_id: str) -> str:
    """The key (and channel) of a job's state in Celery's result backend."""
    return RESULT_KEY_PREFIX + job_id


def success_state(job_id: str, result: JobResult, date_done: str) -> dict[str, Any]:
    """A finished job's state under result_key(job_id), as Celery's Redis result backend stores it."""
    return {"status": "SUCCESS", "result": result, "traceback": None, "children": [], "date_done": date_done,
            "task_id": job_id}


def failure_state(job_id: str, exc_type: str, exc_message: str, exc_module: str, traceback: str | None,
                  date_done: str) -> dict[str, Any]:
    """A failed job's state, as Celery stores an exception (the API shows "exc_type: exc_message")."""
    return {"status": "FAILURE", "result": {"exc_type": exc_type, "exc_message": [exc_message],
                                            "exc_module": exc_module},
            "traceback": traceback, "children": [], "date_done": date_done, "task_id": job_id}


def revoked_state(job_id: str, reason: str, date_done: str) -> dict[str, Any]:
    """A cancelled job's state, as Celery stores a revoked task's (the API shows "cancelled")."""
    return {"status": "REVOKED", "result": {"exc_type": "TaskRevokedError", "exc_message": [reason],
                                            "exc_module": "celery.exceptions"},
            "traceback": None, "children": [], "date_done": date_done, "task_id": job_id}


def decode_state(raw: bytes) -> dict[str, Any]:
    """A job's state as Celery stored or published it: {"status", "result", ...} (JSON: no pickle)."""
    return json.loads(raw)
