"""Only JSON is accepted from the broker: a pickle message pushed into the queue is refused, logged, never run."""
from __future__ import annotations

import os
import pickle
import time
import uuid

import pytest
import requests
from kombu import Connection

from tests.figures import record
from tests.reliability.stack import log_text

pytestmark = pytest.mark.slow


class _Exploit:
    """Unpickling this calls os.mkdir(marker): proof that pickle ran, if it ever does."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_pickle_message_is_refused_and_logged(secure, tmp_path):
    marker = tmp_path / "pickle-was-executed"
    job_id = uuid.uuid4().hex
    body = pickle.dumps(((_Exploit(str(marker)),), {}, {"callbacks": None, "errbacks": None,
                                                          "chain": None, "chord": None}))
    # Straight into the queue the worker consumes, as an attacker with Redis access could.
    with Connection(secure.redis.url) as conn:
        producer = conn.Producer()
        producer.publish(body, routing_key="inferq", exchange="", serializer=None,
                         content_type="application/x-python-serialize", content_encoding="binary",
                         headers={"lang": "py", "task": "inferq.classify", "id": job_id, "root_id": job_id,
                                  "parent_id": None, "group": None, "retries": 0, "argsrepr": "()",
                                  "kwargsrepr": "{}", "origin": "attacker"})
    log = secure.log("w1")
    deadline = time.monotonic() + 20
    while "Refusing to deserialize" not in log_text(log) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    client = secure.client
    refused = [line for line in log_text(log).splitlines() if "Refusing to deserialize" in line]
    # The worker goes on with ordinary jobs.
    with requests.Session() as http:
        response = http.post(secure.keyed_api + "/jobs", json={"text": "after the pickle"},
                             headers={"X-API-Key": _key()}, timeout=5)
        after = http.get(f"{secure.keyed_api}/jobs/{response.json()['job_id']}?wait=20",
                         headers={"X-API-Key": _key()}, timeout=30).json()
    deadline = time.monotonic() + 5  # the next job's own ack may still be on its way
    while client.hlen("unacked") and time.monotonic() < deadline:
        time.sleep(0.1)
    record("pickle message pushed into the queue", executed=marker.exists(), refused_log_lines=len(refused),
           left_in_queue=client.llen("inferq"), left_unacked=client.hlen("unacked"),
           stored_result=client.exists(f"celery-task-meta-{job_id}"), next_job=after["status"])
    assert not marker.exists(), "the pickle payload was executed"
    assert refused and "pickle" in refused[0]
    assert client.llen("inferq") == 0 and client.hlen("unacked") == 0, "the message was not dropped"
    assert not client.exists(f"celery-task-meta-{job_id}")
    assert after["status"] == "succeeded"


def _key() -> str:
    from tests.security.conftest import KEYS

    return KEYS[0]
