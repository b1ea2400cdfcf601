"""Job records in Redis: which ids the API issued, and their state from Celery's results.

Celery reports any unknown task id as PENDING, so the API keeps its own record
of every id it issued, for as long as results are kept: an id without a
record is 404, never an endless "queued".
"""
from __future__ import annotations

import json
import time
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

JOB_KEY = "inferq:job:{}"
"""Per job: when it was queued and how many texts it has; expires with its result."""

# Celery's states, as the four statuses clients see.
STATUS_OF_STATE = {
    "PENDING": "queued",
    "RECEIVED": "queued",
    "RETRY": "queued",
    "STARTED": "running",
    "SUCCESS": "succeeded",
    "FAILURE": "failed",
    "REVOKED": "failed",
}
TERMINAL = {"succeeded", "failed"}


class JobStore:
    """Read and write job records beside Celery's result backend."""

    def __init__(self, celery_app, ttl_seconds: int, socket_timeout: float):
        self.celery_app = celery_app
        self.ttl = ttl_seconds
        self.redis = redis.Redis.from_url(
            celery_app.conf.result_backend,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            # redis-py retries with backoff by default (seconds); the API must
            # answer 503 within 2 s when Redis is away, so fail on the first error.
            retry=Retry(NoBackoff(), 0),
        )

    def create(self, job_id: str, n_texts: int, owner: str | None = None) -> dict:
        """Record a job the API is about to enqueue (owner: its API key's fingerprint)."""
        record = {"queued_at": time.time(), "texts": n_texts}
        if owner is not None:
            record["owner"] = owner
        self.redis.set(JOB_KEY.format(job_id), json.dumps(record), ex=self.ttl)
        return record

    def forget(self, job_id: str) -> None:
        """Drop the record of a job that could not be enqueued."""
        self.redis.delete(JOB_KEY.format(job_id))

    def record(self, job_id: str) -> dict | None:
        """The API's record of a job, or None if it never issued the id or it expired."""
        raw = self.redis.get(JOB_KEY.format(job_id))
        return json.loads(raw) if raw else None

    def meta(self, job_id: str) -> dict[str, Any]:
        """Celery's stored state of the job (PENDING when it has none yet)."""
        # Read through our own client rather than backend.get_task_meta: the
        # backend retries while Redis is away (result_backend_always_retry, which
        # workers need), and a poll must fail within the 503 bound instead.
        backend = self.celery_app.backend
        raw = self.redis.get(backend.get_key_for_task(job_id))
        if raw is None:
            return {"status": "PENDING", "result": None}
        return backend.decode_result(raw)

    def wait(self, job_id: str, seconds: float) -> dict[str, Any]:
        """Return the job's meta once it is finished, or when seconds pass."""
        meta = self.meta(job_id)
        if seconds <= 0 or STATUS_OF_STATE.get(meta["status"]) in TERMINAL:
            return meta
        # Celery's Redis backend publishes each state on the key's own channel.
        # Subscribe first, then read again, so a result stored in between is not missed.
        channel = self.celery_app.backend.get_key_for_task(job_id)
        deadline = time.monotonic() + seconds
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(channel)
            while True:
                meta = self.meta(job_id)
                remaining = deadline - time.monotonic()
                if STATUS_OF_STATE.get(meta["status"]) in TERMINAL or remaining <= 0:
                    return meta
                pubsub.get_message(timeout=remaining)
        finally:
            pubsub.close()
