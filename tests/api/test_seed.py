"""The seed's route, POST /new_request, as the seed's own clients use it: 200, its message, then a result."""
from __future__ import annotations

import uuid

import pytest
import requests

from inferq.api.seed import SEED_ACK
from tests.api.test_jobs import labels_of, wait_done

REQUESTS_PER_CLIENT = 10
"""Each of the seed's client scripts sent ten requests (the issue: 0 of 10 got through)."""

# The three public client scripts written for the seed's orchestrator, as their
# users run them with only the address changed: each posts with requests and
# checks status_code == 200. requests sends bytes and str bodies with no
# Content-Type at all.
SEED_CLIENTS = {
    "raw bytes": lambda url, i: requests.post(url, data=f"Request number {i}".encode(), timeout=10),
    "plain string": lambda url, i: requests.post(url, data=f"Hello {i}", timeout=10),
    "json text": lambda url, i: requests.post(url, json={"text": f"a json client's text {i}"}, timeout=10),
}


SEED_ROUTES = ("/new_request", "/new_requests")
"""The seed's code serves /new_request; its report calls the route /new_requests: both are served, alike."""


@pytest.mark.parametrize("route", SEED_ROUTES)
@pytest.mark.parametrize("client", SEED_CLIENTS, ids=list(SEED_CLIENTS))
def test_seed_clients_get_200_and_their_jobs_succeed(http, api_url, client, route):
    answers = [SEED_CLIENTS[client](f"{api_url}{route}", i) for i in range(REQUESTS_PER_CLIENT)]
    assert [a.status_code for a in answers] == [200] * REQUESTS_PER_CLIENT, answers[0].text
    for answer in answers:
        body = answer.json()
        assert body["message"] == SEED_ACK and body["status"] == "queued"
        assert body["status_url"] == f"{api_url}/jobs/{body['job_id']}"
        assert answer.headers["Location"] == f"/jobs/{body['job_id']}"
    for answer in answers:
        assert wait_done(http, api_url, answer.json()["job_id"])["status"] == "succeeded"


def test_raw_body_is_classified_as_the_text_it_holds(http, api_url):
    text = "Request number 3: ünïcode survives as UTF-8"
    body = http.post(f"{api_url}/new_request?wait=20", data=text.encode()).json()
    assert body["input_text"] == text
    octet = http.post(f"{api_url}/new_request?wait=20", data=text.encode(),
                      headers={"Content-Type": "application/octet-stream"}).json()
    assert octet["input_text"] == text


@pytest.mark.parametrize("route", SEED_ROUTES)
@pytest.mark.parametrize("kind", ["json", "plain", "form", "none"])
def test_wait_returns_the_seed_container_shape(http, api_url, tiny_model, kind, route):
    text = f"a seed client waits for its answer ({kind})"
    url = f"{api_url}{route}?wait=20"
    if kind == "json":
        response = http.post(url, json={"text": text})
    elif kind == "plain":
        response = http.post(url, data=text.encode(), headers={"Content-Type": "text/plain; charset=utf-8"})
    elif kind == "form":
        response = http.post(url, data={"text": text})
    else:
        response = http.post(url, data=text.encode())
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"input_text", "probabilities", "label", "job_id"}
    assert body["input_text"] == text
    labels = labels_of(tiny_model)
    assert len(body["probabilities"]) == len(labels)
    assert sum(body["probabilities"]) == pytest.approx(1.0, abs=1e-5)
    # The list is in the model's label order: the same numbers GET /jobs/<id> gives by name.
    [result] = wait_done(http, api_url, body["job_id"])["results"]
    assert body["probabilities"] == [result["probabilities"][label] for label in labels]
    assert body["label"] == result["label"] == labels[body["probabilities"].index(max(body["probabilities"]))]


@pytest.fixture(scope="module")
def idle_api_url(service_env, tmp_path_factory):
    """An API whose queue no worker consumes: its jobs stay queued, whatever the machine's speed."""
    from inferq.stack import processes
    from tests.conftest import start_api

    process, base = start_api({**service_env, "INFERQ_QUEUE": "nobody-consumes"}, tmp_path_factory.mktemp("idle-api"))
    yield base
    processes.stop(process)


def test_wait_that_runs_out_answers_200_with_the_job_id(http, idle_api_url):
    response = http.post(f"{idle_api_url}/new_request?wait=0.5", data=b"Request number 3")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["message"] == SEED_ACK and body["status"] == "queued"
    assert body["status_url"] == f"{idle_api_url}/jobs/{body['job_id']}"
    assert http.get(body["status_url"]).json()["status"] == "queued"


def test_bad_wait_is_refused_before_anything_is_queued(http, api_url, redis_client):
    before = len(list(redis_client.scan_iter("inferq:job:*")))
    response = http.post(f"{api_url}/new_request?wait=soon", data=b"Request number 3")
    assert response.status_code == 400 and response.json()["error"] == "invalid_wait"
    assert len(list(redis_client.scan_iter("inferq:job:*"))) == before


def test_wait_given_twice_is_refused(http, api_url):
    response = http.post(f"{api_url}/new_request?wait=&wait=5", data=b"Request number 3")
    assert response.status_code == 400 and response.json()["error"] == "invalid_wait"


def test_idempotency_key_replays_the_same_job_with_200(http, api_url):
    headers = {"Idempotency-Key": f"seed-client-{uuid.uuid4().hex}"}
    first = http.post(f"{api_url}/new_request", data=b"Request number 3", headers=headers)
    # The other name of the route is the same route: the same key replays the same job.
    again = http.post(f"{api_url}/new_requests?wait=20", data=b"Request number 3", headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    assert again.json()["job_id"] == first.json()["job_id"] and again.json()["input_text"] == "Request number 3"
