"""Routes that submit jobs and read them back."""
from __future__ import annotations

import re
import time
import uuid
from typing import NamedTuple

import redis
from flask import Blueprint, current_app, jsonify, request, url_for

from inferq import webhooks
from inferq.api import admission, auth, config, idempotency, publisher, seed, validation
from inferq.api.errors import ApiError
from inferq.api.store import STATUS_OF_STATE, TERMINAL, JobStore, Load, cancel
from inferq.contract import lane_of, lane_queues
from inferq.jobview import describe, failure_reason, status_of

bp = Blueprint("jobs", __name__)

JOB_ID = re.compile(r"^[0-9a-f]{32}$")
"""Job ids are uuid4 hex: anything else cannot be one the API issued."""

UNAVAILABLE = (redis.RedisError, ConnectionError, TimeoutError)

FULL = redis.exceptions.OutOfMemoryError
"""Redis refused a write at its maxmemory: the queue is full, not down (admission should have said so first)."""

REPLY_LOST = (redis.ConnectionError, redis.TimeoutError, ConnectionError, TimeoutError)
"""A Redis call that may have run with its reply lost (an error reply says it did not run, or not whole)."""


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
            priority: str = "normal", callback_url: str | None = None, job_id: str | None = None) -> Submitted:
    """Record the job, then queue it in its lane; if it is refused or queueing fails, drop the record.

    Returns (job_id, created, queued_at): with an Idempotency-Key seen before, the
    earlier job, False and None. Past the lane's queue cap or Redis's memory threshold,
    429 (admission control). job_id: the id to give a new job (a caller that watches
    for its result first); else a new one.
    """
    store = _store()
    lane = lane_of(len(texts), priority)
    queue = lane_queues(config.current().redis.queue)[lane]
    body = idempotency.body_fingerprint(texts) if idem_key else ""
    claim = None
    try:
        if idem_key:
            existing = idempotency.lookup(store.redis, idem_key, owner, body)
            if existing:
                return Submitted(existing, False, None)
        job_id, queued_at = job_id or new_job_id(), time.time()
        # queued_at travels with the job so the worker can observe its end-to-end latency without
        # reading the record back.
        message = publisher.job_message(job_id, texts, queued_at, queue, callback_url is not None)
        # The record goes first (a worker may finish the job before this request returns, and a poll
        # must find it); without an Idempotency-Key the message goes in the same round trip, with one in the
        # next, together with the key's claim (api/idempotency.py says why they go together).
        load = store.create(job_id, len(texts), owner, queue, queued_at, lane, callback_url,
                            message=None if idem_key else message)
        try:
            if idem_key:
                claim, claim_value = idempotency.claim(idem_key, owner, body, job_id)
                won, depth, replicated = store.claim_and_push(queue, message, claim, claim_value)
                if won is not None:  # another request with the key queued its job first
                    winner = idempotency.job_of(won, body)  # 409 if its texts differed (then forgotten below)
                    store.forget(job_id)
                    return Submitted(winner, False, None)
                load = load._replace(depth=depth, replicated=replicated)
            if not load.replicated:
                _unreplicated(store, queue, message, claim)
            _admit(store, load, lane, queue, message, claim)
        except REPLY_LOST:
            # With a key, the claim and the message may have been written (only the reply lost), and a retry
            # with the key gets that job, which needs its record: kept (it expires with the others).
            if not idem_key:
                store.forget(job_id)
            raise
        except BaseException:
            store.forget(job_id)
            raise
    except FULL:
        current_app.logger.warning("Redis refused a write: it is at its maxmemory")
        retry_after = config.current().retry_after
        raise ApiError(429, "queue_full", f"the job queue's memory is full; retry after {retry_after}s",
                       headers={"Retry-After": str(retry_after)}) from None
    except UNAVAILABLE:
        current_app.logger.warning("cannot reach Redis to enqueue a job")
        raise _redis_down() from None
    return Submitted(job_id, True, queued_at)


def _unreplicated(store: JobStore, queue: str, message: str, claim: str | None) -> None:
    """Fewer replicas than INFERQ_REDIS_MIN_REPLICAS acknowledged the job in time: refuse it (503), take its
    message off its queue and release its Idempotency-Key's claim, in one step (the caller drops its record).

    Decision: a job a worker took between the push and the WAIT's answer is refused all the same. 202 promises
    that the replicas hold the job, which was not so; that job then runs once, and its result, stored under
    an id no client was given, expires with the other results. A client that retries gets a new job.
    """
    if not store.withdraw(queue, message, claim, release="always"):
        current_app.logger.warning("a job refused for want of replicas was taken by a worker first: it runs once, "
                                   "unseen")
    link = config.current().redis
    raise ApiError(503, "replication_unavailable",
                   f"fewer than {link.min_replicas} Redis replica(s) acknowledged the job within "
                   f"{link.replica_timeout:g}s, so it was not accepted; retry shortly",
                   headers={"Retry-After": "1"})


def _admit(store: JobStore, load: Load, lane: str, queue: str, message: str, claim: str | None) -> None:
    """Admission control after the push: a job past its lane's cap or Redis's memory threshold is taken off
    the queue again and refused (429), its Idempotency-Key's claim released with it. One a worker took meanwhile
    stays accepted: it is running."""
    settings = config.current()
    try:
        admission.admit(load.depth - 1, settings.max_queue_depth, settings.retry_after, lane)
        admission.admit_memory(load.used_memory, load.maxmemory, settings.redis_memory_high, settings.retry_after)
    except ApiError:
        if store.withdraw(queue, message, claim):
            raise


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
    wait = validation.single_wait(request.args.getlist("wait"), config.current().max_wait_seconds)
    texts, priority, url, has_callback = validation.submission(request, current_app.extensions["inferq.job_request"])
    callback_url = _callback_url(url) if has_callback else None
    if wait <= 0:
        return _accepted(enqueue(texts, owner, idem_key, priority, callback_url))
    store = _store()
    job_id = new_job_id()
    # Watch before queueing: the result's publish cannot come before the watch,
    # so waiting needs no read of the job's state (one round trip for the client).
    with store.listener.watch(job_id) as watch:
        submitted = enqueue(texts, owner, idem_key, priority, callback_url, job_id)
        callback = None
        try:
            if submitted.created:
                record: dict | None = {"queued_at": submitted.queued_at, "texts": len(texts),
                                       "lane": lane_of(len(texts), priority)}
                meta = store.wait_watched(watch, job_id, wait, {"status": "PENDING", "result": None})
                if callback_url is not None:
                    callback = {"url": callback_url, "state": "pending", "attempts": 0}
            else:  # an Idempotency-Key replay: the earlier job, which may be done already
                record, meta, callback = store.record_and_meta(submitted.job_id)
                meta = store.wait(submitted.job_id, wait, meta)
        except UNAVAILABLE:
            return _accepted(submitted)  # queued; only the wait failed: answer as without ?wait
    if record is None or STATUS_OF_STATE.get(meta["status"]) not in TERMINAL:
        return _accepted(submitted)
    response = jsonify(describe(submitted.job_id, record, meta, callback))
    if not submitted.created:
        response.headers["Idempotent-Replayed"] = "true"
    return response


def _callback_url(url: object) -> str:
    """A job's callback_url, checked: callbacks enabled, an http(s) URL, leading to an allowed address."""
    hooks = config.current().webhooks
    if not hooks.secret:
        raise ApiError(400, "callbacks_disabled", "this API sends no callbacks (INFERQ_WEBHOOK_SECRET is not set, "
                       "and it never sends unsigned ones); poll GET /jobs/<id> instead")
    try:
        webhooks.check(url, hooks.allowed_networks)
    except webhooks.InvalidCallbackUrl as exc:
        raise ApiError(400, "invalid_callback_url", str(exc)) from None
    except webhooks.CallbackNotAllowed as exc:
        raise ApiError(400, "callback_url_not_allowed", str(exc)) from None
    return str(url)  # a str: webhooks.check refuses anything else


# The seed's route, under both names: its code serves /new_request, and its report calls it /new_requests.
@bp.post("/new_request")
@bp.post("/new_requests", endpoint="seed_new_requests")
def seed_new_request():
    """The seed's route, kept for its clients: 200 once queued; with ?wait=N, the result if done by then.

    A body without a Content-Type, or sent as application/octet-stream, is taken as the text itself (UTF-8):
    what the seed's clients send.
    """
    owner = auth.require_key(request)
    idem_key = idempotency.parse(request.headers.get("Idempotency-Key"))
    wait = validation.single_wait(request.args.getlist("wait"), config.current().max_wait_seconds)
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
    error = {"code": "job_failed", "message": failure_reason(meta)} if status == "failed" else None
    return seed.acknowledgement(job_id, created, status, error)


def _own_record(store: JobStore, job_id: str, owner: str | None) -> tuple[dict, dict, dict | None]:
    """The record, state and callback of a job the caller may see; 404 otherwise."""
    if not JOB_ID.match(job_id):
        raise ApiError(404, "job_not_found", f"no job {job_id!r}: job ids are 32 hex characters")
    record, meta, callback = store.record_and_meta(job_id)
    if record is not None and not auth.may_read(record, owner):
        record = None  # another key's job: answer as if it did not exist
    if record is None:
        raise ApiError(404, "job_not_found", f"no job {job_id}: never issued, or its result expired")
    return record, meta, callback


@bp.get("/jobs/<job_id>")
def get_job(job_id: str):
    """A job's status and, when done, its result; ?wait=N long-polls."""
    owner = auth.require_key(request)
    wait = validation.wait_seconds(request.args.get("wait"), config.current().max_wait_seconds)
    store = _store()
    try:
        record, meta, callback = _own_record(store, job_id, owner)
        meta = store.wait(job_id, wait, meta)
    except UNAVAILABLE:
        raise _redis_down() from None
    return jsonify(describe(job_id, record, meta, callback))


@bp.delete("/jobs/<job_id>")
def cancel_job(job_id: str):
    """Cancel a job: queued, 200 cancelled (it never runs); running, 202 cancel_requested; finished, 409."""
    owner = auth.require_key(request)
    store = _store()
    try:
        _, _, callback = _own_record(store, job_id, owner)
        outcome, state = cancel(store, job_id)
    except UNAVAILABLE:
        raise _redis_down() from None
    status = status_of(state) if state is not None else ("cancelled" if outcome == "queued" else "cancel_requested")
    if status in ("succeeded", "failed"):
        raise ApiError(409, "job_finished", f"job {job_id} has {status} already; there is nothing to cancel")
    if outcome == "queued" and callback is not None:
        _send_callback(store, job_id)
    response = jsonify(job_id=job_id, status=status)
    response.status_code = 200 if status == "cancelled" else 202
    return response


def _send_callback(store: JobStore, job_id: str) -> None:
    """Queue the delivery of a job's callback (cancelled by the API: no worker reaches a final state for it)."""
    try:
        publisher.publish_callback(store.redis, config.current().redis.queue, job_id)
    except Exception as exc:  # the job is cancelled; its callback is then never sent: say so
        current_app.logger.error("could not queue the callback of cancelled job %s: %s", job_id, exc)
