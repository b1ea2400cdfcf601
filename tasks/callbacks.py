"""Signed completion callbacks: POST a finished job's view to its callback_url, at least once.

When a job submitted with a callback_url reaches a final state (succeeded,
failed, cancelled) its worker (or the API, for a job cancelled while queued)
queues DELIVER_CALLBACK_TASK.
The delivery is a task of its own on the interactive lane, acknowledged late:
a worker that dies with it leaves it unacknowledged, and Redis gives it back.
Each attempt checks the URL again (DNS can change since the submit), connects
to the very address it checked (no second lookup to rebind), follows no
redirect, and POSTs the same JSON ``GET /jobs/<id>`` answers, signed
(webhooks.py). A connection error, a timeout, 408, 429 or a 5xx is retried
through the queue with exponential backoff and jitter, until
INFERQ_WEBHOOK_MAX_AGE_SECONDS after the first attempt; any other answer
outside 2xx gives up. The state is kept under contract.CALLBACK_KEY and shown
in the job's record.
"""
from __future__ import annotations

import http.client
import json
import logging
import random
import socket
import ssl
import time
from typing import Any

import redis

from inferq import jobview, webhooks
from inferq.broker import wake, wire
from inferq.celery_app import app
from inferq.contract import CALLBACK_KEY, DELIVER_CALLBACK_TASK
from inferq.settings import Worker, current
from inferq.tasks import clients

log = logging.getLogger(__name__)

FIRST_DELAY = 1.0
"""Seconds before the second attempt; each later one doubles it (with jitter), up to MAX_DELAY."""
MAX_DELAY = 600.0
NOT_FINAL_DELAY = 0.5
"""A delivery that finds its job not final yet (its result not stored) looks again after this."""

def jobs_finished(job_ids: list[str]) -> None:
    """Jobs submitted with a callback_url reached a final state: queue the delivery of each callback still
    pending (one read for all of them; jobs without a callback cost nothing, their message says so)."""
    if not job_ids:
        return
    try:
        raws = clients.backend().mget([CALLBACK_KEY.format(job_id) for job_id in job_ids])
    except redis.RedisError as exc:
        log.error("could not read the callbacks of job(s) %s: %s", ", ".join(job_ids), exc)
        return
    for job_id, raw in zip(job_ids, raws):
        if raw is None or json.loads(raw).get("state") != "pending":
            continue
        queue = current(Worker).redis.queue
        try:  # the same message the API queues for a job cancelled while queued (broker/wire.py)
            wake.push(clients.broker(), queue, wire.callback_envelope(job_id, queue))
        except Exception as exc:
            log.error("could not queue the callback of job %s: %s", job_id, exc)


def backoff(attempts: int, rng: random.Random | None = None) -> float:
    """Seconds before the next attempt after `attempts` failed ones: exponential, capped, with full jitter
    over its upper half (so retries of many callbacks spread out)."""
    ceiling = min(MAX_DELAY, current(Worker).delivery.visibility_timeout / 2, FIRST_DELAY * 2 ** max(0, attempts - 1))
    return ceiling * (0.5 + 0.5 * (rng or random).random())


class _PinnedHTTP(http.client.HTTPConnection):
    """HTTP to an address checked beforehand (the Host header still names the URL's host)."""

    def __init__(self, address: str, host: str, port: int, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self.address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to an address checked beforehand, the certificate verified for the URL's host."""

    def __init__(self, address: str, host: str, port: int, timeout: float):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self.address = address

    def connect(self) -> None:
        sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def post(target: webhooks.Target, address: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
    """POST body to the target at address; return the status code (raises OSError on a network error)."""
    kind = _PinnedHTTPS if target.scheme == "https" else _PinnedHTTP
    connection = kind(str(address), target.host, target.port, timeout)
    try:
        connection.request("POST", target.path, body=body, headers={"Host": target.netloc, **headers})
        response = connection.getresponse()
        response.read(64 * 1024)
        return response.status
    finally:
        connection.close()


class Retry(Exception):
    """This attempt failed in a way worth another one."""


def attempt(job_id: str, callback: dict[str, Any]) -> None:
    """One delivery attempt: return if delivered, raise Retry, or raise GiveUp."""
    hooks = current(Worker).webhooks
    record, meta, state = jobview.read(clients.backend(), job_id)
    if record is None:
        raise GiveUp("the job's record expired before its callback was delivered")
    if jobview.status_of(meta) not in jobview.TERMINAL:
        raise NotFinal()
    try:
        target, addresses = webhooks.check(callback["url"], hooks.allowed_networks)
    except webhooks.Unresolvable as exc:
        raise Retry(str(exc)) from None
    except (webhooks.CallbackNotAllowed, webhooks.InvalidCallbackUrl) as exc:
        raise GiveUp(str(exc)) from None
    body = json.dumps(jobview.describe(job_id, record, meta, state or callback), separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "inferq-callback",
               webhooks.SIGNATURE_HEADER: webhooks.signature(hooks.secret, body),
               webhooks.JOB_ID_HEADER: job_id}
    try:
        status = post(target, str(addresses[0]), body, headers, hooks.timeout)
    except (OSError, http.client.HTTPException) as exc:
        raise Retry(f"{type(exc).__name__}: {exc}") from None
    if 200 <= status < 300:
        return
    if status in (408, 429) or status >= 500:
        raise Retry(f"the receiver answered {status}")
    raise GiveUp(f"the receiver answered {status}" + (" (redirects are not followed)" if 300 <= status < 400 else ""))


class GiveUp(Exception):
    """No further attempt: the URL is refused now, or the receiver refused the callback (a 4xx)."""


class NotFinal(Exception):
    """The job's final state is not stored yet."""


def _save(job_id: str, callback: dict[str, Any]) -> None:
    clients.backend().set(CALLBACK_KEY.format(job_id), json.dumps(callback), keepttl=True)


@app.task(name=DELIVER_CALLBACK_TASK, bind=True, acks_late=True, max_retries=None, ignore_result=True)
def deliver_callback(self, job_id: str, first_at: float | None = None) -> str:
    """Deliver a finished job's callback (one attempt; a retry is a new message with a countdown)."""
    raw = clients.backend().get(CALLBACK_KEY.format(job_id))
    if raw is None:
        return "none"
    callback = json.loads(raw)
    if callback.get("state") != "pending":
        return callback.get("state", "")  # delivered (a duplicate message) or given up
    now = time.time()
    first_at = first_at or now
    try:
        attempt(job_id, callback)
    except NotFinal:
        if now - first_at > 60:
            callback.update(state="gave_up", last_error="the job's final state was never stored")
            _save(job_id, callback)
            return "gave_up"
        raise self.retry(countdown=NOT_FINAL_DELAY, args=[job_id], kwargs={"first_at": first_at}) from None
    except GiveUp as exc:
        callback.update(state="gave_up", attempts=callback.get("attempts", 0) + 1, last_error=str(exc))
        _save(job_id, callback)
        log.warning("callback of job %s given up: %s", job_id, exc)
        return "gave_up"
    except Retry as exc:
        attempts = callback.get("attempts", 0) + 1
        delay = backoff(attempts)
        callback.update(attempts=attempts, last_error=str(exc))
        if now + delay - first_at > current(Worker).webhooks.max_age_seconds:
            callback["state"] = "gave_up"
            _save(job_id, callback)
            log.warning("callback of job %s given up after %d attempts: %s", job_id, attempts, exc)
            return "gave_up"
        _save(job_id, callback)
        log.info("callback of job %s failed (%s); attempt %d in %.1fs", job_id, exc, attempts + 1, delay)
        raise self.retry(countdown=delay, args=[job_id], kwargs={"first_at": first_at}) from None
    callback.update(state="delivered", attempts=callback.get("attempts", 0) + 1, delivered_at=time.time())
    callback.pop("last_error", None)
    _save(job_id, callback)
    log.info("callback of job %s delivered", job_id)
    return "delivered"

