"""A job as clients see it: the JSON of ``GET /jobs/<id>``, read from Redis by key.

The API answers it, and a completion callback POSTs the very same JSON
(tasks/callbacks.py), so both build it here: this module needs only redis
and the contract, never Flask or the workers' code.
"""
from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from inferq.broker import wire
from inferq.broker.wire import UNACKED_KEY, decode_state, result_key
from inferq.contract import CALLBACK_KEY, CANCEL_KEY, JOB_KEY

CANCEL_REQUESTED = "CANCEL_REQUESTED"
"""Not a Celery state: no result yet, a worker runs the job, and a DELETE asked to cancel it."""

# Celery's states (and ours), as the statuses clients see.
STATUS_OF_STATE = {
    wire.PENDING: "queued",
    wire.RECEIVED: "queued",
    wire.RETRY: "queued",
    wire.STARTED: "running",
    CANCEL_REQUESTED: "cancel_requested",
    wire.SUCCESS: "succeeded",
    wire.FAILURE: "failed",
    wire.REVOKED: "cancelled",
}
TERMINAL = {"succeeded", "failed", "cancelled"}
STATUSES = ("queued", "running", "cancel_requested", "succeeded", "failed", "cancelled")


def status_of(meta: dict[str, Any]) -> str:
    """The client's status of a job's state."""
    return STATUS_OF_STATE.get(meta["status"], "queued")


def state(raw_meta: bytes | None, taken: bool = False, cancel: bytes | None = None) -> dict[str, Any]:
    """A job's state from its raw result (published or stored), whether a worker holds it, and its cancel mark."""
    if raw_meta is not None:
        return decode_state(raw_meta)
    if cancel is not None:
        # Cancelled while it ran (or a queued cancel whose result expired first): no result will be kept.
        return {"status": CANCEL_REQUESTED if cancel == b"running" else wire.REVOKED, "result": None}
    if taken:
        # No result yet, but a worker holds it (it is in kombu's record of taken messages, under its id).
        # A job whose worker died stays "running" until it is given back to its queue.
        return {"status": wire.STARTED, "result": None}
    return {"status": wire.PENDING, "result": None}


def read_state(client: Any, job_id: str) -> dict[str, Any]:
    """A job's state, read in one round trip."""
    pipe = client.pipeline(transaction=False)
    pipe.mget(result_key(job_id), CANCEL_KEY.format(job_id))
    pipe.hexists(UNACKED_KEY, job_id)
    (raw_meta, cancel), taken = pipe.execute()
    return state(raw_meta, bool(taken), cancel)


def read(client: Any, job_id: str) -> tuple[dict | None, dict[str, Any], dict | None]:
    """The record (None: never issued or expired), the state and the callback's state of a job, in one round trip."""
    pipe = client.pipeline(transaction=False)
    pipe.mget(JOB_KEY.format(job_id), result_key(job_id), CANCEL_KEY.format(job_id), CALLBACK_KEY.format(job_id))
    pipe.hexists(UNACKED_KEY, job_id)
    (raw_record, raw_meta, cancel, raw_callback), taken = pipe.execute()
    record = json.loads(raw_record) if raw_record else None
    callback = json.loads(raw_callback) if raw_callback else None
    return record, state(raw_meta, bool(taken), cancel), callback


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat() if ts else None


def _ms(start: float | None, end: float | None) -> float | None:
    return round((end - start) * 1000, 3) if start and end else None


def failure_reason(meta: dict) -> str:
    """A failed job's reason, as Celery stored its exception."""
    result = meta.get("result")
    if isinstance(result, dict) and "exc_type" in result:
        message = result.get("exc_message")
        if isinstance(message, (list, tuple)):
            message = " ".join(map(str, message))
        return f"{result['exc_type']}: {message}"
    return str(result or meta["status"])


def callback_view(callback: dict) -> dict[str, Any]:
    """What a job's record shows of its callback: url, state, attempts, and delivered_at or last_error."""
    view: dict[str, Any] = {"url": callback["url"], "state": callback.get("state", "pending"),
                            "attempts": int(callback.get("attempts", 0))}
    if callback.get("delivered_at"):
        view["delivered_at"] = _iso(callback["delivered_at"])
    if callback.get("last_error"):
        view["last_error"] = callback["last_error"]
    return view


def describe(job_id: str, record: dict, meta: dict, callback: dict | None = None) -> dict:
    """The client's view of a job: status, and when done its results and timings."""
    status = status_of(meta)
    body: dict[str, Any] = {"job_id": job_id, "status": status, "texts": record["texts"]}
    if "lane" in record:
        body["lane"] = record["lane"]
    queued_at = record["queued_at"]
    timings: dict[str, Any] = {"queued_at": _iso(queued_at)}
    if status == "succeeded":
        result = meta["result"]
        started, finished = result["started_at"], result["finished_at"]
        timings.update(
            started_at=_iso(started), finished_at=_iso(finished),
            queue_ms=_ms(queued_at, started), inference_ms=_ms(started, finished),
            total_ms=_ms(queued_at, finished),
        )
        body.update(model=result["model"], results=result["results"], worker=result["worker"])
    elif status == "failed":
        body["error"] = {"code": "job_failed", "message": failure_reason(meta)}
    body["timings"] = timings
    if callback is not None:
        body["callback"] = callback_view(callback)
    return body
