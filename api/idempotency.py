"""Idempotency keys: a retried submit with the same ``Idempotency-Key`` gets the same job.

The first request with a key claims it in Redis with ``SET NX`` (atomic, so of
two racing requests exactly one creates the job) and stores the job id and a
fingerprint of the texts. A later request with the key and the same texts gets
that job back; with other texts it is refused with 409. Keys are scoped to the
caller's API key and expire with the job.

The claim and the job's message are written in one script (broker/scripts.py
CLAIM_AND_QUEUE), and a refused job's message is withdrawn with its claim in one
too (WITHDRAW): a claim exists only while its job is queued or taken. Written in
two steps, a submit cut between them (its API killed, its Redis connection or
Redis lost) left a claim for a job never queued, and the client's retry with the
same key was answered 202 for a job that would never run (a lost job, seen in
the lab's failover test).
"""
from __future__ import annotations

import hashlib
import json
import re

import redis

from inferq.api.errors import ApiError
from inferq.contract import IDEMPOTENCY_KEY

VALID_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
"""Printable ASCII without spaces, at most 255 characters (what clients send: a UUID or similar)."""


def parse(raw: str | None) -> str | None:
    """The request's Idempotency-Key, or None; raise 400 if it is malformed."""
    if raw is None:
        return None
    if not VALID_KEY.match(raw):
        raise ApiError(400, "invalid_idempotency_key",
                       "Idempotency-Key must be 1 to 255 printable ASCII characters without spaces")
    return raw


def _redis_key(key: str, owner: str | None) -> str:
    scope = f"{owner or ''}\0{key}".encode()
    return IDEMPOTENCY_KEY.format(hashlib.sha256(scope).hexdigest())


def body_fingerprint(texts: list[str]) -> str:
    """A digest of what the job would classify: same texts, same job."""
    return hashlib.sha256(json.dumps(texts, ensure_ascii=True).encode()).hexdigest()


def job_of(raw: bytes | str, body: str) -> str:
    """The job a stored claim names; 409 if it was made for other texts."""
    stored = json.loads(raw)
    if stored["body"] != body:
        raise ApiError(409, "idempotency_key_reused",
                       "this Idempotency-Key was used with a different body; use a new key for a new job")
    return stored["job_id"]


def lookup(client: redis.Redis, key: str, owner: str | None, body: str) -> str | None:
    """The job an earlier request with this key created, or None; 409 if its body differed."""
    raw = client.get(_redis_key(key, owner))
    return job_of(raw, body) if raw else None


def claim(key: str, owner: str | None, body: str, job_id: str) -> tuple[str, str]:
    """The Redis key and value of job_id's claim on key: set together with the job's queueing, in one atomic
    step (JobStore.claim_and_push), so a claim never names a job that was not queued."""
    return _redis_key(key, owner), json.dumps({"job_id": job_id, "body": body})
