"""API keys: when ``INFERQ_API_KEYS`` is set, submit and poll need one, and a job is its submitter's.

A key is sent as ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``.
Jobs record a fingerprint of the key that submitted them (never the key), and
a job read with another key is answered 404, as if it did not exist, so one
client cannot learn another's job ids.
"""
from __future__ import annotations

import hashlib
import hmac

from flask import Request

from inferq.api import config
from inferq.api.errors import ApiError

OWNER_BYTES = 16
"""Bytes of SHA-256 kept as a key's fingerprint: enough to tell keys apart, useless to guess one."""


def presented_key(request: Request) -> str | None:
    """The API key the request carries, if any."""
    key = request.headers.get("X-API-Key")
    if key:
        return key
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def fingerprint(key: str) -> str:
    """A stable, non-reversible id of a key, stored with the jobs it submits."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[: 2 * OWNER_BYTES]


def require_key(request: Request) -> str | None:
    """Return the caller's fingerprint (None when keys are off); raise 401 without a valid key."""
    keys = config.current().keys.accepted
    if not keys:
        return None
    key = presented_key(request)
    # Compare against every key in constant time, so timing says nothing about which matched.
    valid = key is not None and any(
        [hmac.compare_digest(key.encode("utf-8", "surrogatepass"), k.encode()) for k in keys]
    )
    if key is None or not valid:
        raise ApiError(401, "unauthorized",
                       "this API needs a key: send it as X-API-Key: <key> or Authorization: Bearer <key>",
                       headers={"WWW-Authenticate": 'Bearer realm="inferq"'})
    return fingerprint(key)


def may_read(record: dict, owner: str | None) -> bool:
    """True if the caller may see this job: keys are off, or it submitted the job."""
    if owner is None:
        return True
    return hmac.compare_digest(str(record.get("owner", "")), owner)
