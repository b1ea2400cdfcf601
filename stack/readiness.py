"""Know when the local stack is up: every worker beating, the API ready, Flower answering."""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis
import requests

from inferq.contract import WORKERS_KEY

log = logging.getLogger(__name__)

READY_LINE = "inferq is up"
"""The stack prints this once everything is ready; the demo and the tests wait for it."""

POLL_SECONDS = 0.25
"""How often readiness is checked: fast enough to notice, slow enough to cost nothing."""


def fresh_workers(client: redis.Redis, names: list[str], since: float) -> list[str]:
    """The named workers whose last heartbeat came after since (older entries are from a past run)."""
    scores = client.zmscore(WORKERS_KEY, names)
    return [name for name, score in zip(names, scores) if score is not None and score >= since]


def http_ok(url: str, auth: tuple[str, str] | None = None) -> bool:
    """True when url answers 200 within a second."""
    try:
        return requests.get(url, timeout=1, auth=auth).status_code == 200
    except requests.RequestException:
        return False


def wait_ready(client: redis.Redis, names: list[str], api_url: str, flower_url: str, since: float,
               timeout: float, stop: threading.Event, say: Callable[[str], None],
               forget_before: float | None = None) -> bool:
    """Wait until every named worker beats and the API and Flower answer; say each worker as it comes.

    forget_before: first remove the heartbeats older than this (a past run's workers, which would show missing).
    """
    deadline = time.monotonic() + timeout
    seen: set[str] = set()
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            if forget_before is not None:
                client.zremrangebyscore(WORKERS_KEY, "-inf", f"({forget_before}")
                forget_before = None
            up = fresh_workers(client, names, since)
        except redis.RedisError:
            up = []  # Redis is still starting
        for name in up:
            if name not in seen:
                seen.add(name)
                say(f"worker {name} ready: model loaded and warmed ({len(seen)}/{len(names)})")
        if len(seen) == len(names) and http_ok(api_url + "/readyz") and http_ok(flower_url + "/healthcheck"):
            return True
        stop.wait(POLL_SECONDS)
    return False
