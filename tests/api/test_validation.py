"""Request validation in process, through create_app(test_config) and Flask's test client: no server, no Redis.

The same bad requests as test_errors.py, which sends them to the real API under
gunicorn: here they run in milliseconds, so a change to validation is checked
without starting anything. The app's Redis is a port nothing listens on
(tests/conftest.py), so a request that got as far as Redis would answer 503:
every case below is refused before the job queue is touched.
"""
from __future__ import annotations

import pytest

from inferq.api import create_app
from tests.api.test_errors import CASES, MAX_BODY, MAX_TEXTS

KEY = "k" * 24


@pytest.fixture(scope="module")
def client():
    app = create_app({"MAX_CONTENT_LENGTH": MAX_BODY, "INFERQ_MAX_TEXTS": MAX_TEXTS, "TESTING": True})
    return app.test_client()


@pytest.fixture(scope="module")
def keyed_client():
    return create_app({"INFERQ_API_KEYS": (KEY,), "TESTING": True}).test_client()


@pytest.mark.parametrize("name,path,kwargs,status,code", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_before_the_queue(client, name, path, kwargs, status, code):
    response = client.post(path, **kwargs)
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.json["error"] == code and response.json["message"]


@pytest.mark.parametrize("wait", ["soon", "-1", "nan"])
def test_bad_wait_is_400(client, wait):
    response = client.get(f"/jobs/{'a' * 32}", query_string={"wait": wait})
    assert response.status_code == 400 and response.json["error"] == "invalid_wait"


def test_a_malformed_job_id_is_404_without_a_lookup(client):
    response = client.get("/jobs/not-a-job-id")
    assert response.status_code == 404 and response.json["error"] == "job_not_found"


def test_a_malformed_idempotency_key_is_400(client):
    response = client.post("/jobs", json={"text": "hi"}, headers={"Idempotency-Key": "has spaces"})
    assert response.status_code == 400 and response.json["error"] == "invalid_idempotency_key"


def test_a_missing_or_wrong_key_is_401_when_keys_are_on(keyed_client):
    for headers in ({}, {"X-API-Key": "wrong-key-of-some-length"}, {"Authorization": "Basic abc"}):
        response = keyed_client.post("/jobs", json={"text": "hi"}, headers=headers)
        assert response.status_code == 401 and response.json["error"] == "unauthorized"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_valid_job_with_redis_away_is_503_with_retry_after(client):
    response = client.post("/jobs", json={"text": "a valid text"})
    assert response.status_code == 503 and response.json["error"] == "redis_unavailable"
    assert response.headers["Retry-After"] == "1"


def test_unknown_route_and_method_are_json(client):
    assert client.get("/nope").json["error"] == "not_found"
    assert client.delete("/jobs").json["error"] == "method_not_allowed"
