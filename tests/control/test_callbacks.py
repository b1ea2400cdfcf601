"""Signed completion callbacks against real workers and a local receiver: retries, signature, SSRF, a killed worker."""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import time

import pytest
import requests

from inferq import webhooks
from inferq.stack.processes import wait_until
from inferq.tasks.faults import SLEEP_PREFIX
from tests.control.conftest import SECRET, WEBHOOK_ENV
from tests.figures import record
from tests.reliability.stack import Stack, log_text


def callback_state(http, api, job_id):
    return http.get(f"{api}/jobs/{job_id}").json().get("callback", {})


def check_signature(request: dict, job_id: str) -> None:
    """The headers as specified: Inferq-Job-Id, and Inferq-Signature t=<unix>,v1=<HMAC-SHA256 of "<t>.<body>">."""
    headers = {k.lower(): v for k, v in request["headers"].items()}
    assert headers["inferq-job-id"] == job_id
    t, v1 = headers["inferq-signature"].split(",")
    assert t.startswith("t=") and v1.startswith("v1=")
    timestamp = int(t[2:])
    assert abs(time.time() - timestamp) < 120
    expected = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + request["body"], hashlib.sha256).hexdigest()
    assert hmac.compare_digest(v1[3:], expected)
    assert webhooks.verify(SECRET, request["body"], headers["inferq-signature"])
    assert not webhooks.verify("another secret entirely", request["body"], headers["inferq-signature"])


def test_a_receiver_failing_twice_then_answering_gets_the_signed_callback(control, receiver_factory):
    receiver = receiver_factory([500, 503, 200])
    with requests.Session() as http:
        response = http.post(control.api + "/jobs", json={"text": "call me back", "callback_url": receiver.url})
        assert response.status_code == 202, response.text
        job_id = response.json()["job_id"]
        assert callback_state(http, control.api, job_id)["state"] in ("pending", "delivered")
        got = receiver.wait_for(3, timeout=30)
        assert [r["status"] for r in got] == [500, 503, 200]
        wait_until(lambda: callback_state(http, control.api, job_id).get("state") == "delivered", 10,
                   "the record to say delivered")
        job = http.get(f"{control.api}/jobs/{job_id}").json()
    for request in got:
        check_signature(request, job_id)
        assert request["path"] == "/hooks/inferq?x=1"
    body = receiver.json(2)
    # The same JSON GET /jobs/<id> answers (the callback's own state aside, which moved on since).
    assert {k: v for k, v in body.items() if k != "callback"} == {k: v for k, v in job.items() if k != "callback"}
    assert body["status"] == "succeeded" and len(body["results"]) == 1
    assert job["callback"]["state"] == "delivered" and job["callback"]["attempts"] == 3
    assert job["callback"]["delivered_at"] and job["callback"]["url"] == receiver.url
    time.sleep(1)
    assert len(receiver.requests) == 3  # delivered once it succeeded: no more attempts


def test_a_4xx_gives_up_and_a_cancelled_job_is_called_back(control, receiver_factory):
    refusing = receiver_factory([404])
    with requests.Session() as http:
        body = {"texts": ["a", "b"], "callback_url": refusing.url}
        job_id = http.post(control.api + "/jobs", json=body).json()["job_id"]
        wait_until(lambda: callback_state(http, control.api, job_id).get("state") == "gave_up", 20, "gave_up")
        state = callback_state(http, control.api, job_id)
        assert state["attempts"] == 1 and "404" in state["last_error"]
        time.sleep(1.5)
        assert len(refusing.requests) == 1  # a 404 is not retried

        listening = receiver_factory([200])
        busy = [http.post(control.api + "/jobs", json={"text": f"{SLEEP_PREFIX}1.5"}).json()["job_id"]
                for _ in range(4)]
        queued = http.post(control.api + "/jobs", json={"text": "never run", "callback_url": listening.url}).json()
        assert http.delete(f"{control.api}/jobs/{queued['job_id']}").json()["status"] == "cancelled"
        [request] = listening.wait_for(1, timeout=20)
        check_signature(request, queued["job_id"])
        assert json.loads(request["body"])["status"] == "cancelled"
        control.wait_done(busy, timeout=30)


@pytest.mark.parametrize("url,code", [
    ("http://127.0.0.1:9/x", "callback_url_not_allowed"),          # loopback
    ("http://[::1]/x", "callback_url_not_allowed"),
    ("http://localhost/x", "callback_url_not_allowed"),              # a name that resolves to loopback
    ("http://10.1.2.3/x", "callback_url_not_allowed"),               # private
    ("http://192.168.0.10/x", "callback_url_not_allowed"),
    ("http://172.16.5.4/x", "callback_url_not_allowed"),
    ("http://169.254.169.254/latest/meta-data/", "callback_url_not_allowed"),  # link-local, the metadata service
    ("http://[fd00:ec2::254]/", "callback_url_not_allowed"),         # the metadata service over IPv6
    ("http://[::ffff:127.0.0.1]/x", "callback_url_not_allowed"),     # loopback mapped into IPv6
    ("http://0.0.0.0/x", "callback_url_not_allowed"),
    ("http://2130706433/x", "callback_url_not_allowed"),             # 127.0.0.1 as one decimal number
    ("ftp://example.com/x", "invalid_callback_url"),
    ("file:///etc/passwd", "invalid_callback_url"),
    ("not a url", "invalid_callback_url"),
    ("http:///no-host", "invalid_callback_url"),
    ("http://user:pw@example.com/", "invalid_callback_url"),
    ("http://example.com:99999/", "invalid_callback_url"),
    (12, "invalid_callback_url"),
])
def test_ssrf_and_malformed_urls_are_refused_at_submit(control, strict_api, url, code):
    with requests.Session() as http:
        response = http.post(strict_api + "/jobs", json={"text": "x", "callback_url": url})
    assert response.status_code == 400, response.text
    assert response.json()["error"] == code, response.json()


@pytest.fixture(scope="module")
def strict_api(control):
    """An API with callbacks on and no network allowed beyond public addresses."""
    return control.start_api(INFERQ_WEBHOOK_ALLOWED_NETWORKS="")


def test_callbacks_disabled_without_a_secret(control):
    api = control.start_api(INFERQ_WEBHOOK_SECRET="")
    response = requests.post(api + "/jobs", json={"text": "x", "callback_url": "https://example.com/hook"})
    assert (response.status_code, response.json()["error"]) == (400, "callbacks_disabled")


def test_the_address_is_checked_again_at_delivery(control, receiver_factory, tmp_path_factory, tiny_model):
    """An API that allowed the URL, workers that no longer do (as if DNS had changed): the callback is given up,
    and nothing reaches the receiver."""
    receiver = receiver_factory([200])
    stack = Stack(tmp_path_factory.mktemp("recheck"), tiny_model, **{**WEBHOOK_ENV,
                  "INFERQ_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.2/32"})
    stack.start_redis()
    try:
        stack.start_workers(["w1"])
        api = stack.start_api(INFERQ_WEBHOOK_ALLOWED_NETWORKS="127.0.0.0/8")
        with requests.Session() as http:
            job_id = http.post(api + "/jobs", json={"text": "x", "callback_url": receiver.url}).json()["job_id"]
            wait_until(lambda: callback_state(http, api, job_id).get("state") == "gave_up", 20, "gave_up")
            assert "127.0.0.1" in callback_state(http, api, job_id)["last_error"]
        assert receiver.requests == []
    finally:
        stack.stop()


@pytest.mark.slow
def test_a_worker_killed_while_a_callback_is_pending_still_delivers(receiver_factory, tmp_path_factory, tiny_model):
    """The receiver fails the first attempt, and the worker holding the retry is SIGKILLed right after:
    the retry (or the unacknowledged attempt) comes back through Redis, and another worker delivers it."""
    stack = Stack(tmp_path_factory.mktemp("callback-kill"), tiny_model, **WEBHOOK_ENV)
    stack.start_redis()
    killed = {}

    def kill_the_worker(number: int) -> None:
        if number == 0:
            time.sleep(0.3)  # the worker has scheduled its retry (backoff 0.5-1 s)
            killed["at"] = time.monotonic()
            os.kill(stack.workers["w1"].pid, signal.SIGKILL)

    receiver = receiver_factory([503, 200], on_request=kill_the_worker)
    try:
        stack.start_workers(["w1"])
        api = stack.start_api()
        with requests.Session() as http:
            job_id = http.post(api + "/jobs", json={"text": "x", "callback_url": receiver.url}).json()["job_id"]
            receiver.wait_for(1, timeout=20)
            wait_until(lambda: stack.workers["w1"].poll() is not None, 10, "w1 to die")
            w2_started = time.monotonic()
            stack.start_workers(["w2"])
            got = receiver.wait_for(2, timeout=60)
            assert [r["status"] for r in got[:2]] == [503, 200]
            check_signature(got[1], job_id)
            wait_until(lambda: callback_state(http, api, job_id).get("state") == "delivered", 10, "delivered")
        delivered_after = got[1]["at"] - killed["at"]
        record("callback after its worker was SIGKILLed", delivered_after_s=delivered_after,
               attempts=len(got))
        # The delivery that succeeded came after the kill, once w1 was gone and w2 running, and w2 made it.
        assert got[1]["at"] > w2_started > killed["at"]
        delivered = f"callback of job {job_id} delivered"
        assert delivered in log_text(stack.log("w2")) and delivered not in log_text(stack.log("w1"))
    finally:
        stack.stop()
