"""Request validation in process, through create_app(settings) and Flask's test client: no server, no Redis.

The same bad requests as test_errors.py, which sends them to the real API under
gunicorn: here they run in milliseconds, so a change to validation is checked
without starting anything. The app's Redis is a port nothing listens on
(tests/conftest.py), so a request that got as far as Redis would answer 503:
every case below is refused before the job queue is touched.
"""
from __future__ import annotations

import os

import pytest
from flask import Flask

from inferq.api import create_app
from inferq.settings import Api, load
from tests.api.test_errors import CASES, MAX_BODY, MAX_TEXTS

KEY = "k" * 24


def make_app(**env: object) -> Flask:
    """The API with env's settings (read as the API reads its environment) over this process's own."""
    app = create_app(load(Api, {**os.environ, **{name: str(value) for name, value in env.items()}}))
    app.testing = True
    return app


@pytest.fixture(scope="module")
def client():
    return make_app(INFERQ_MAX_BODY_BYTES=MAX_BODY, INFERQ_MAX_TEXTS=MAX_TEXTS).test_client()


@pytest.fixture(scope="module")
def keyed_client():
    return make_app(INFERQ_API_KEYS=KEY).test_client()


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


def _document(**env):
    client = make_app(**env).test_client()
    return client, client.get("/openapi.json").json


@pytest.mark.parametrize("secret", ["", "s" * 24])
def test_the_document_states_the_limits_the_app_runs_with(secret):
    _, document = _document(INFERQ_MAX_TEXTS=3, INFERQ_WEBHOOK_SECRET=secret)
    job = document["components"]["schemas"]["JobRequest"]
    assert job["properties"]["texts"]["maxItems"] == 3  # what `inferq submit-file` sizes its jobs by
    assert ("callback_url" in job["properties"]) == bool(secret)  # without a secret, callback_url is refused
    assert {"/new_request", "/new_requests"} <= set(document["paths"])


def test_what_the_document_allows_the_api_accepts_and_no_more():
    # One declaration: the limits and the enum the document states are the ones validation applies.
    # Accepted requests reach Redis, which is away here: 503 means "passed validation".
    client, document = _document(INFERQ_MAX_TEXTS=3)
    job = document["components"]["schemas"]["JobRequest"]
    most = job["properties"]["texts"]["maxItems"]
    assert client.post("/jobs", json={"texts": ["t"] * most}).status_code == 503
    assert client.post("/jobs", json={"texts": ["t"] * (most + 1)}).json["error"] == "too_many_texts"
    assert client.post("/jobs", json={"texts": []}).json["error"] == "empty_texts"
    for priority in job["properties"]["priority"]["enum"]:
        assert client.post("/jobs", json={"text": "hi", "priority": priority}).status_code == 503
    refused = client.post("/jobs", json={"text": "hi", "priority": "urgent"}).json
    assert refused == {"error": "invalid_priority", "message": "priority must be one of 'normal', 'low'"}


@pytest.mark.parametrize("body,code,message", [
    ({"texts": ["ok", 3]}, "invalid_text", "texts[1] must be a string, not int"),
    ({"text": " \x1c\x85 "}, "empty_text", "text is empty; send at least one non-blank character"),
    ({"texts": "one"}, "invalid_texts", "texts must be a list of strings, not str"),
    ({"texts": ["t"] * 9}, "too_many_texts", "texts has 9 items; send at most 8 per job"),
    ({"txt": "a", "Text": "b", "text": 3}, "unknown_field",
     "unknown field(s) 'Text', 'txt'; use text or texts (and optionally priority, callback_url)"),
    ({"text": 3, "texts": ["a"]}, "ambiguous_body", "send either text or texts, not both"),
    ({"priority": "urgent"}, "missing_text", 'the body has no text; send {"text": "..."} or {"texts": [...]}'),
    ({"texts": [], "priority": "urgent"}, "empty_texts", "texts is an empty list; send at least one text"),
])
def test_messages_are_inferqs_not_pydantics(client, body, code, message):
    # Clients match on these: pydantic's wording and error order must never leak through.
    assert client.post("/jobs", json=body).json == {"error": code, "message": message}


def test_requests_never_pass_through_spectree(client):
    # spectree writes the document once, from the models; a request's cost is the view's alone.
    views = client.application.view_functions
    assert not [endpoint for endpoint, view in views.items() if hasattr(view, "__wrapped__")]
