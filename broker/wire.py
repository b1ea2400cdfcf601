"""The formats inferq writes or reads but does not own: Celery's and kombu's, in one place.

Celery's task message (protocol 2) in kombu's Redis envelope, Celery's result
states and the keys they live under, kombu's unacknowledged record (its keys
and its entry layout) and the task events Flower reads. Everything else in
inferq calls this module rather than writing these shapes itself.
tests/broker/test_wire.py pins each against what the installed Celery and
kombu produce, so an upgrade that changes one fails that test by name.

Two copies cannot be avoided, and the test pins both: broker/scripts.TAKE builds
kombu's unacknowledged entry in Lua (unacked_entry here), and reads a message's
delivery tag, id, task and text count with cjson.
"""
from __future__ import annotations

import base64
import json
import uuid
from typing import Any

from inferq.contract import (
    CALLBACK_HEADER,
    CLASSIFY_TASK,
    DELIVER_CALLBACK_TASK,
    TEXTS_HEADER,
    JobResult,
    classify_message,
)

# --- Celery's result backend and states ---

RESULT_KEY_PREFIX = "celery-task-meta-"
"""Celery's Redis result backend: a job's state under RESULT_KEY_PREFIX + id, published on a channel of that name."""

PENDING, RECEIVED, STARTED, RETRY = "PENDING", "RECEIVED", "STARTED", "RETRY"
SUCCESS, FAILURE, REVOKED = "SUCCESS", "FAILURE", "REVOKED"
"""Celery's state names (celery.states)."""


def result_key(job_id: str) -> str:
    """The key (and channel) of a job's state in Celery's result backend."""
    return RESULT_KEY_PREFIX + job_id


def success_state(job_id: str, result: JobResult, date_done: str) -> dict[str, Any]:
    """A finished job's state under result_key(job_id), as Celery's Redis result backend stores it."""
    return {"status": SUCCESS, "result": result, "traceback": None, "children": [], "date_done": date_done,
            "task_id": job_id}


def failure_state(job_id: str, exc_type: str, exc_message: str, exc_module: str, traceback: str | None,
                  date_done: str) -> dict[str, Any]:
    """A failed job's state, as Celery stores an exception (the API shows "exc_type: exc_message")."""
    return {"status": FAILURE, "result": {"exc_type": exc_type, "exc_message": [exc_message],
                                          "exc_module": exc_module},
            "traceback": traceback, "children": [], "date_done": date_done, "task_id": job_id}


def revoked_state(job_id: str, reason: str, date_done: str) -> dict[str, Any]:
    """A cancelled job's state, as Celery stores a revoked task's (the API shows "cancelled")."""
    return {"status": REVOKED, "result": {"exc_type": "TaskRevokedError", "exc_message": [reason],
                                          "exc_module": "celery.exceptions"},
            "traceback": None, "children": [], "date_done": date_done, "task_id": job_id}


def decode_state(raw: bytes | str) -> dict[str, Any]:
    """A job's state as Celery stored or published it: {"status", "result", ...} (JSON: no pickle)."""
    return json.loads(raw)


# --- Celery's task message in kombu's Redis envelope ---

ARGSREPR_MAX = 1024
"""Characters of a job's texts that its message's argsrepr carries (what Flower shows), as Celery cuts them."""


def task_envelope(task: str, task_id: str, args: list, kwargs: dict, queue: str,
                  headers: dict[str, Any] | None = None, delivery_tag: str | None = None) -> str:
    """A task's message as it lies in its queue: Celery's task message (protocol 2) in kombu's Redis envelope.

    The API pushes this onto the queue's list itself (api/publisher.py) instead of
    calling Celery's send_task, whose producer also subscribes to and unsubscribes
    from the task's result channel (two Redis commands and most of the API's
    publishing CPU per job) for a result the API reads its own way.
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


def callback_envelope(job_id: str, queue: str) -> str:
    """The message of a job's callback delivery (DELIVER_CALLBACK_TASK, args [job_id]), as the API queues it for a
    job cancelled while queued and a worker for a job it finished."""
    return task_envelope(DELIVER_CALLBACK_TASK, uuid.uuid4().hex, [job_id], {}, queue)


def read_task(raw: bytes | str) -> tuple[dict[str, Any], dict[str, Any], list, dict]:
    """A task message as it lay in its queue: (its headers, kombu's properties, args, kwargs)."""
    message = json.loads(raw)
    body = message["body"]
    if message["properties"].get("body_encoding") == "base64":
        body = base64.b64decode(body)
    args, kwargs, _embed = json.loads(body)  # Celery's message protocol 2
    return message["headers"], message["properties"], args, kwargs or {}


def mark_redelivered(message: dict[str, Any]) -> None:
    """Mark a message given back to its queue as kombu marks a restored one (headers and delivery info)."""
    message["headers"]["redelivered"] = True
    message["properties"]["delivery_info"]["redelivered"] = True


# --- kombu's record of taken messages ---

UNACKED_KEY = "unacked"
"""kombu's hash of messages taken by a worker and not yet acknowledged (delivery tag -> unacked_entry)."""

UNACKED_INDEX_KEY = "unacked_index"
"""kombu's sorted set of those delivery tags by time taken: what the visibility-timeout scan reads."""

UNACKED_MUTEX_KEY = "unacked_mutex"
"""kombu's lock around that scan."""

BINDING_KEY = "_kombu.binding.{}"
"""kombu's routing table of an exchange; a queue's waiting jobs are the Redis list named after the queue."""


def unacked_entry(raw: str, exchange: str, routing_key: str) -> str:
    """kombu's entry for a taken message: [message, exchange, routing key], the message as it lay in its queue
    (what broker/scripts.TAKE writes, by string, in Lua)."""
    return "[" + raw + "," + json.dumps(exchange) + "," + json.dumps(routing_key) + "]"


def read_unacked_entry(raw: bytes | str) -> tuple[dict[str, Any], str, str]:
    """(message, exchange, routing key) of kombu's entry."""
    message, exchange, routing_key = json.loads(raw)
    return message, exchange, routing_key


# --- the task events Flower reads ---

def received_event(headers: dict[str, Any]) -> dict[str, Any]:
    """task-received's fields, for a job taken with the message headers given (as Celery's worker sends them)."""
    return {"name": headers.get("task", CLASSIFY_TASK), "args": headers.get("argsrepr", ""),
            "kwargs": headers.get("kwargsrepr", ""), "retries": headers.get("retries", 0),
            "eta": headers.get("eta"), "expires": headers.get("expires"),
            "root_id": headers.get("root_id"), "parent_id": headers.get("parent_id")}


def succeeded_event(result: Any, runtime: float) -> dict[str, Any]:
    """task-succeeded's fields (Celery sends the result's repr, cut; we cut it at 200 characters)."""
    return {"result": repr(result)[:200], "runtime": runtime}


def failed_event(exc: BaseException) -> dict[str, Any]:
    """task-failed's fields."""
    return {"exception": repr(exc), "traceback": ""}


def revoked_event() -> dict[str, Any]:
    """task-revoked's fields, for a job a DELETE cancelled (not terminated, not expired)."""
    return {"terminated": False, "signum": None, "expired": False}
