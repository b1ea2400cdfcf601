"""Liveness and readiness probes."""
from __future__ import annotations

import time

import redis
from flask import Blueprint, current_app, jsonify

from inferq.api import config
from inferq.contract import WORKERS_KEY

bp = Blueprint("health", __name__)

MISSED_BEATS = 3
"""A worker that has missed this many heartbeats is no longer counted ready (one late beat on a busy machine is not
a death)."""

MISSING_FOR_SECONDS = 24 * 3600
"""How long a worker that stopped beating without deregistering (it was killed) is reported missing. A worker that
stops cleanly removes its heartbeat; one that was killed leaves it, and is missing until it beats again, however
long it takes to come back. After a day its name is taken as retired (a host terminated without a clean stop),
so it does not stay missing forever."""


def heartbeat_bounds(now: float) -> tuple[float, float]:
    """(fresh_after, missing_after): a worker whose last beat came after fresh_after is ready; one whose last beat
    came between missing_after and fresh_after is missing."""
    fresh_after = now - MISSED_BEATS * config.current().redis.heartbeat_seconds
    return fresh_after, now - MISSING_FOR_SECONDS


@bp.get("/healthz")
def healthz():
    """The API process is up (it checks nothing else)."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    """Redis answers and at least one worker sent a heartbeat recently; the workers that stopped beating, by name."""
    client = current_app.extensions["inferq.store"].redis
    fresh_after, missing_after = heartbeat_bounds(time.time())
    try:
        client.ping()
        workers = client.zcount(WORKERS_KEY, fresh_after, "+inf")
        missing = sorted(name.decode() for name in client.zrangebyscore(WORKERS_KEY, missing_after,
                                                                        f"({fresh_after}"))
    except redis.RedisError as exc:
        response = jsonify(status="unavailable", redis="unreachable", workers=0,
                           message=f"Redis does not answer: {type(exc).__name__}")
        response.status_code = 503
        return response
    ready = workers > 0
    response = jsonify(status="ready" if ready else "unavailable", redis="ok", workers=workers, missing=missing,
                       **({} if ready else {"message": "no worker is consuming jobs"}))
    response.status_code = 200 if ready else 503
    return response
