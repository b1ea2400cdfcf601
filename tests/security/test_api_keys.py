"""API keys: submit and poll need one; a job can be read only with the key that submitted it."""
from __future__ import annotations

import pytest
import requests

from inferq.contract import JOB_KEY, SUBMITTED_KEY
from tests.security.conftest import KEYS

pytestmark = pytest.mark.slow


@pytest.fixture()
def http():
    with requests.Session() as session:
        yield session


def accepted(client) -> tuple[int, set[bytes]]:
    """What the API has accepted so far: its count of submitted jobs and the ids it recorded."""
    # The queue itself cannot tell: the worker may have consumed a job already.
    return int(client.get(SUBMITTED_KEY) or 0), set(client.scan_iter(match=JOB_KEY.format("*"), count=1000))


def test_submit_and_poll_need_a_key(secure, http):
    base = secure.keyed_api
    before = accepted(secure.client)
    for headers in ({}, {"X-API-Key": "wrong-key-of-enough-length"}, {"Authorization": "Basic eDp5"},
                    {"X-API-Key": KEYS[0][:-1]}):
        response = http.post(base + "/jobs", json={"text": "hello"}, headers=headers, timeout=5)
        assert response.status_code == 401, headers
        assert response.json()["error"] == "unauthorized"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        seed = http.post(base + "/new_request", data={"text": "hello"}, headers=headers, timeout=5)
        assert seed.status_code == 401
    assert accepted(secure.client) == before, "a request refused with 401 was accepted all the same"
    job = http.post(base + "/jobs", json={"text": "hello"}, headers={"X-API-Key": KEYS[0]}, timeout=5)
    assert job.status_code == 202
    job_id = job.json()["job_id"]
    # The same check sees an accepted job: one more submitted, recorded under its id.
    count, records = accepted(secure.client)
    assert (count, records - before[1]) == (before[0] + 1, {JOB_KEY.format(job_id).encode()})
    assert http.get(f"{base}/jobs/{job_id}", timeout=5).status_code == 401
    # The submitter reads it, with either header form.
    assert http.get(f"{base}/jobs/{job_id}?wait=20", headers={"X-API-Key": KEYS[0]}, timeout=30).status_code == 200
    assert http.get(f"{base}/jobs/{job_id}", headers={"Authorization": f"Bearer {KEYS[0]}"},
                    timeout=5).status_code == 200
    # Another valid key gets 404, exactly as for an id that does not exist.
    other = http.get(f"{base}/jobs/{job_id}", headers={"X-API-Key": KEYS[1]}, timeout=5)
    assert other.status_code == 404 and other.json()["error"] == "job_not_found"


def test_health_and_openapi_need_no_key(secure, http):
    assert http.get(secure.keyed_api + "/healthz", timeout=5).status_code == 200
    document = http.get(secure.keyed_api + "/openapi.json", timeout=5).json()
    assert document["security"] and "apiKey" in document["components"]["securitySchemes"]


def test_keys_never_appear_in_answers_or_logs(secure, http):
    response = http.post(secure.keyed_api + "/jobs", json={"text": "x"}, headers={"X-API-Key": KEYS[1][:-2]},
                         timeout=5)
    assert KEYS[1][:-2] not in response.text
    for name in ("api0", "api1", "w1"):
        text = secure.log(name).read_text(errors="replace")
        assert not any(key in text for key in KEYS), name
