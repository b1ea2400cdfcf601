"""Idempotency-Key: a retried submit gets the same job, even when the two requests race."""
from __future__ import annotations

import threading
import uuid

import pytest
import requests

from tests.figures import record

pytestmark = pytest.mark.slow


def _post(base, body, key):
    with requests.Session() as http:
        return http.post(base + "/jobs", json=body, headers={"Idempotency-Key": key}, timeout=10)


def test_same_key_same_body_same_job_even_racing(stack):
    key = uuid.uuid4().hex
    barrier = threading.Barrier(16)
    answers = []

    def racer():
        barrier.wait()
        answers.append(_post(stack.api, {"text": "exactly once"}, key))

    threads = [threading.Thread(target=racer) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = {a.json()["job_id"] for a in answers}
    replayed = sum(a.headers.get("Idempotent-Replayed") == "true" for a in answers)
    job_id = ids.pop()
    states = stack.wait_done([job_id], timeout=20)
    record("idempotency race", requests=len(answers), distinct_jobs=1 + len(ids), replayed=replayed,
           runs=stack.deliveries([job_id])[job_id])
    assert ids == set() and all(a.status_code == 202 for a in answers)
    assert replayed == len(answers) - 1
    assert states[job_id] == "SUCCESS" and stack.deliveries([job_id])[job_id] == 1
    # Later retries, after the job ran, still get it.
    assert _post(stack.api, {"text": "exactly once"}, key).json()["job_id"] == job_id


def test_same_key_other_body_is_refused(stack):
    key = uuid.uuid4().hex
    first = _post(stack.api, {"text": "one"}, key)
    other = _post(stack.api, {"texts": ["two"]}, key)
    assert first.status_code == 202
    assert other.status_code == 409 and other.json()["error"] == "idempotency_key_reused"
    # The same texts sent the other way ({"texts": [...]}) are the same job.
    assert _post(stack.api, {"texts": ["one"]}, key).json()["job_id"] == first.json()["job_id"]


def test_malformed_key_is_refused(stack):
    for key in ("", "has space", "x" * 256, "é"):
        response = requests.post(stack.api + "/jobs", json={"text": "x"},
                                 headers={"Idempotency-Key": key.encode("utf-8")}, timeout=10)
        assert response.status_code == 400 and response.json()["error"] == "invalid_idempotency_key", key
