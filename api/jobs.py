"""Routes that submit jobs and read them back."""
from __future__ import annotations

import re
import time
import uuid
from datetime import UTC, datetime
from typing import Any, NamedTuple

import redis
from flask import Blueprint, current_app, jsonify, request, url_for

from inferq.api import admission, auth, idempotency, publisher, seed, validation
from inferq.api.errors import ApiError
from inferq.api.store import STATUS_OF_STATE, TERMINAL, JobStore

bp = Blueprint("jobs", __name__)

JOB_ID = re.compile(r"^[0-9a-f]{32}$")
"""Job ids are uuid4 hex: anything else cannot be one the API issued."""

UNAVAILABLE = (redis.RedisError, ConnectionError, TimeoutError)

FULL = redis.exceptions.OutOfMemoryError
"""Redis refused a write at its maxmemory: the queue is full, not down (admission should have said so first)."""


class Submitted(NamedTuple):
    """What enqueue did: the job's id, whether it is new (else an Idempotency-Key replay), when it was queued."""

    job_id: str
    created: bool
    queued_at: float | None


def _store() -> JobStore:
    return current_app.extensions["inferq.store"]


def _redis_down() -> ApiError:
    return ApiError(503, "redis_unavailable", "the job queue is unreachable; retry shortly",
                    headers={"Retry-After": "1"})


def enqueue(texts: list[str], owner: str | None = None, idem_key: str | None = None,
            job_id: str | None = None) -> Submitted:
    """Record the job, then queue it; if it is refused or queueing fails, drop the record.

    Returns (job_id, created, queued_at): with an Idempotency-Key seen before, the
    earlier job, False and None. Past the queue cap or Redis's memory threshold, 429 (admission control).
    job_id: the id to give a new job (a caller that watches for its result first); else a new one.
    """
    store = _store()
    config = current_app.config
    body = idempotency.body_fingerprint(texts) if idem_key else ""
    try:
        if idem_key:
            existing = idempotency.lookup(store.redis, idem_key, owner, body)
            if existing:
                return Submitted(existing, False, None)
        job_id, queued_at = job_id or new_job_id(), time.time()
        # Record first (one round trip with the queue-depth check): a worker may
        # finish the job before this request returns, and a poll must find it.
        load = store.create(job_id, len(texts), owner, config["INFERQ_QUEUE"], queued_at,
                            size=2 * sum(map(len, texts)) + 1024)  # the texts twice (message, argsrepr), and headers
        try:
            admission.admit(load.depth, config["INFERQ_MAX_QUEUE_DEPTH"], config["INFERQ_RETRY_AFTER"])
            admission.admit_memory(load.used_memory, load.maxmemory, config["INFERQ_REDIS_MEMORY_HIGH"],
                                   config["INFERQ_RETRY_AFTER"])
            if idem_key:
                winner = idempotency.claim(store.redis, idem_key, owner, body, job_id, store.ttl)
                if winner != job_id:
                    store.forget(job_id)
                    return Submitted(winner, False, None)
            try:
                # queued_at travels with the job so the worker can observe its
                # end-to-end latency without reading the record back.
                publisher.publish(store.redis, config["INFERQ_QUEUE"], job_id, texts, queued_at)
            except Exception:
                if idem_key:
                    idempotency.release(store.redis, idem_key, owner)
                raise
        except BaseException:
            store.forget(job_id)
            raise
    except FULL:
        current_app.logger.warning("Redis refused a write: it is at its maxmemory")
        raise ApiError(429, "queue_full", "the job queue's memory is full; retry after "
                       f"{config['INFERQ_RETRY_AFTER']}s",
                       headers={"Retry-After": str(config["INFERQ_RETRY_AFTER"])}) from None
    except UNAVAILABLE:
        current_app.logger.warning("cannot reach Redis to enqueue a job")
        raise _redis_down() from None
    return Submitted(job_id, True, queued_at)


def new_job_id() -> str:
    """A job id: uuid4 hex (JOB_ID)."""
    return uuid.uuid4().hex


def _accepted(submitted: Submitted, **extra):
    job_id, created, _ = submitted
    response = jsonify(job_id=job_id, status="queued", **extra)
    response.status_code = 202
    response.headers["Location"] = url_for("jobs.get_job", job_id=job_id)
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return response


@bp.post("/jobs")
def submit_job():
    """Queue one text or a bulk job of texts; with ?wait=N, answer 200 with the result if it is done by then."""
    owner = auth.require_key(request)
    idem_key = idempotency.parse(request.headers.get("Idempotency-Key"))
    wait = validation.single_wait(request.args.getlist("wait"), current_app.config["INFERQ_MAX_WAIT_SECONDS"])
    validation.require_json(request)
    body = validation.read_json(request)
    texts = validation.texts_from_job(body, current_app.config["INFERQ_MAX_TEXTS"])
    if wait <= 0:
        return _accepted(enqueue(texts, owner, idem_key))
    store = _store()
    job_id = new_job_id()
    # Watch before queueing: the result's publish cannot come before the watch,
    # so waiting needs no read of the job's state (one round trip for the client).
    with store.listener.watch(job_id) as watch:
        submitted = enqueue(texts, owner, idem_key, job_id)
        try:
            if submitted.created:
                record: dict | None = {"queued_at": submitted.queued_at, "texts": len(texts)}
                meta = store.wait_watched(watch, job_id, wait, {"status": "PENDING", "result": None})
            else:  # an Idempotency-Key replay: the earlier job, which may be done already
                record, meta = store.record_and_meta(submitted.job_id)
                meta = store.wait(submitted.job_id, wait, meta)
        except UNAVAILABLE:
            return _accepted(submitted)  # queued; only the wait failed: answer as without ?wait
    if record is None or STATUS_OF_STATE.get(meta["status"]) not in TERMINAL:
        return _accepted(submitted)
    response = jsonify(describe(submitted.job_id, record, meta))
    if not submitted.created:
        response.headers["Idempotent-Replayed"] = "true"
    return response


@bp.post("/new_request")
def seed_new_request():
    """The seed's route, kept for its clients: 200 once queued; with ?wait=N, the result if done by then."""
    owner = auth.require_key(request)
    idem_key = idempotency.parse(request.headers.get("Idempotency-Key"))
    wait = validation.single_wait(request.args.getlist("wait"), current_app.config["INFERQ_MAX_WAIT_SECONDS"])
    text = validation.text_from_seed_request(request)
    job_id, created, _ = enqueue([text], owner, idem_key)
    if wait <= 0:
        return seed.acknowledgement(job_id, created)
    try:
        meta = _store().wait(job_id, wait)
    except UNAVAILABLE:
        # The job is queued; only the wait for it failed: say so as without ?wait.
        return seed.acknowledgement(job_id, created)
    status = STATUS_OF_STATE.get(meta["status"], "queued")
    if status == "succeeded":
        return seed.container_result(job_id, text, meta["result"]["results"][0], created)
    error = {"code": "job_failed", "message": _failure_reason(meta)} if status == "failed" else None
    return seed.acknowledgement(job_id, created, status, error)


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat() if ts else None


def _ms(start: float | None, end: float | None) -> float | None:
    return round((end - start) * 1000, 3) if start and end else None


def describe(job_id: str, record: dict, meta: dict) -> dict:
    """The client's view of a job: status, and when done its results and timings."""
    status = STATUS_OF_STATE.get(meta["status"], "queued")
    body: dict[str, Any] = {"job_id": job_id, "status": status, "texts": record["texts"]}
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
        body["error"] = {"code": "job_failed", "message": _failure_reason(meta)}
    body["timings"] = timings
    return body


def _failure_reason(meta: dict) -> str:
    result = meta.get("result")
    if isinstance(result, dict) and "exc_type" in result:
        message = result.get("exc_message")
        if isinstance(message, (list, tuple)):
            message = " ".join(map(str, message))
        return f"{result['exc_type']}: {message}"
    return str(result or meta["status"])


@bp.get("/jobs/<job_id>")
def get_job(job_id: str):
    """A job's status and, when done, its result; ?wait=N long-polls."""
    owner = auth.require_key(request)
    wait = validation.wait_seconds(request.args.get("wait"), current_app.config["INFERQ_MAX_WAIT_SECONDS"])
    if not JOB_ID.match(job_id):
        raise ApiError(404, "job_not_found", f"no job {job_id!r}: job ids are 32 hex characters")
    store = _store()
    try:
        record, meta = store.record_and_meta(job_id)
        if record is not None and not auth.may_read(record, owner):
            record = None  # another key's job: answer as if it did not exist
        if record is None:
            raise ApiError(404, "job_not_found", f"no job {job_id}: never issued, or its result expired")
        meta = store.wait(job_id, wait, meta)
    except UNAVAILABLE:
        raise _redis_down() from None
    return jsonify(describe(job_id, record, meta))
