"""Liveness and readiness probes."""
from __future__ import annotations

import time

import redis
from flask import Blueprint, current_app, jsonify

from inferq.contract import WORKERS_KEY

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    """The API process is up (it checks nothing else)."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    """Redis answers and at least one worker sent a heartbeat recently."""
    client = current_app.extensions["inferq.store"].redis
    # A worker beats every heartbeat_seconds; three missed beats and it is gone.
    fresh_after = time.time() - 3 * current_app.config["INFERQ_HEARTBEAT_SECONDS"]
    try:
        client.ping()
        workers = client.zcount(WORKERS_KEY, fresh_after, "+inf")
    except redis.RedisError as exc:
        response = jsonify(status="unavailable", redis="unreachable", workers=0,
                           message=f"Redis does not answer: {type(exc).__name__}")
        response.status_code = 503
        return response
    ready = workers > 0
    response = jsonify(status="ready" if ready else "unavailable", redis="ok", workers=workers,
                       **({} if ready else {"message": "no worker is consuming jobs"}))
    response.status_code = 200 if ready else 503
    return response
