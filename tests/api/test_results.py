"""The API's long-poll: one shared subscription per process, woken by Celery's own publishes.

A real Redis of the test's own and Celery's real Redis result backend storing
the results (it publishes each state it stores), so the channel names and
payloads are the ones the workers produce.
"""
from __future__ import annotations

import threading
import time
import uuid

import pytest
import redis
from celery import Celery

from inferq.api.store import JobStore
from inferq.settings import RedisLink, load
from inferq.stack.redis_server import RedisServer

WAIT = 20.0
"""The long-poll's wait: a waiter that was not woken would take this long."""


@pytest.fixture
def server(tmp_path):
    s = RedisServer(tmp_path / "redis").start()
    yield s
    s.stop()


@pytest.fixture
def backend_app(server):
    app = Celery("results-test", broker=server.url, backend=server.url)
    app.conf.update(result_serializer="json", accept_content=["json"], result_accept_content=["json"])
    return app


def wait_in_thread(store: JobStore, job_id: str, seconds: float = WAIT):
    """Start a long-poll; return (thread, outcome dict filled with meta/error and elapsed)."""
    outcome = {}

    def run():
        started = time.monotonic()
        try:
            outcome["meta"] = store.wait(job_id, seconds)
        except redis.RedisError as exc:
            outcome["error"] = exc
        outcome["elapsed"] = time.monotonic() - started

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def store_of(url: str) -> JobStore:
    """A store on url, with a short TTL and timeout."""
    return JobStore(load(RedisLink, {"REDIS_URL": url, "INFERQ_RESULT_TTL": "60", "INFERQ_REDIS_TIMEOUT": "0.5"}))


def settle(store: JobStore, waiting: int = 1, timeout: float = 5) -> None:
    """Until the listener is subscribed and the waiters registered."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if store.listener.connected.is_set() and len(store.listener._watches) >= waiting:
            return
        time.sleep(0.01)
    raise AssertionError("the listener never subscribed")


def test_waiters_share_one_subscription_and_wake_on_the_stored_result(server, backend_app):
    store = store_of(server.url)
    jobs = [uuid.uuid4().hex for _ in range(5)]
    waiters = [wait_in_thread(store, job_id) for job_id in jobs]
    settle(store, waiting=len(jobs))
    client = server.client()
    assert client.execute_command("PUBSUB", "NUMPAT") == 1  # one subscription, however many waiters
    backend_app.backend.store_result(jobs[0], {"n": 0}, "STARTED")  # not final: keeps waiting
    for n, job_id in enumerate(jobs):
        backend_app.backend.store_result(job_id, {"n": n}, "SUCCESS")
    for (thread, outcome), n in zip(waiters, range(len(jobs))):
        thread.join(WAIT + 5)
        assert outcome["meta"]["status"] == "SUCCESS" and outcome["meta"]["result"] == {"n": n}
        assert outcome["elapsed"] < WAIT / 2, "the waiter slept its whole wait instead of being woken"
    assert store.listener._watches == {}  # every waiter deregistered


def test_a_result_stored_before_the_wait_returns_at_once(server, backend_app):
    store = store_of(server.url)
    job_id = uuid.uuid4().hex
    backend_app.backend.store_result(job_id, {"done": True}, "SUCCESS")
    meta = store.wait(job_id, WAIT)
    assert meta["status"] == "SUCCESS"


def test_redis_lost_mid_wait_fails_fast_and_the_listener_comes_back(server, backend_app):
    store = store_of(server.url)
    thread, outcome = wait_in_thread(store, uuid.uuid4().hex)
    settle(store)
    server.kill()
    thread.join(WAIT + 5)
    # The API turns this into 503 at once rather than holding the client for the wait.
    assert "error" in outcome and outcome["elapsed"] < 5
    server.start()
    job_id = uuid.uuid4().hex
    thread, outcome = wait_in_thread(store, job_id)
    settle(store, timeout=10)
    backend_app.backend.store_result(job_id, {"after": "restart"}, "SUCCESS")
    thread.join(WAIT + 5)
    assert outcome["meta"]["status"] == "SUCCESS" and outcome["elapsed"] < WAIT / 2
