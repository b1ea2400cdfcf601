"""Every bad request gets a JSON error with a stable code, and enqueues nothing."""
from __future__ import annotations

import pytest

QUEUE = "inferq"
MAX_TEXTS = 8  # INFERQ_MAX_TEXTS in conftest's service_env
MAX_BODY = 65536  # INFERQ_MAX_BODY_BYTES

JSON = {"Content-Type": "application/json"}

CASES = [
    # (id, method+path, kwargs, status, code)
    ("malformed json", "/jobs", dict(data=b'{"text": ', headers=JSON), 400, "invalid_json"),
    ("empty body", "/jobs", dict(data=b"", headers=JSON), 400, "invalid_json"),
    ("not utf-8", "/jobs", dict(data=b'{"text": "\xff\xfe"}', headers=JSON), 400, "invalid_json"),
    ("deep json", "/jobs", dict(data=b"[" * 100000 + b"]" * 100000, headers=JSON), 413, "body_too_large"),
    ("deep json within size", "/jobs", dict(data=b"[" * 30000 + b"]" * 30000, headers=JSON), 400, "invalid_json"),
    ("not an object", "/jobs", dict(json=["a text"]), 400, "invalid_body"),
    ("missing text", "/jobs", dict(json={}), 400, "missing_text"),
    ("unknown field", "/jobs", dict(json={"txt": "typo"}), 400, "unknown_field"),
    ("both fields", "/jobs", dict(json={"text": "a", "texts": ["b"]}), 400, "ambiguous_body"),
    ("unknown priority", "/jobs", dict(json={"text": "a", "priority": "urgent"}), 400, "invalid_priority"),
    ("callback without a secret", "/jobs", dict(json={"texts": ["a", "b"], "callback_url": "https://example.com/"}),
     400, "callbacks_disabled"),
    ("empty text", "/jobs", dict(json={"text": ""}), 400, "empty_text"),
    ("blank text", "/jobs", dict(json={"text": " \n\t"}), 400, "empty_text"),
    ("number text", "/jobs", dict(json={"text": 42}), 400, "invalid_text"),
    ("null text", "/jobs", dict(json={"text": None}), 400, "invalid_text"),
    ("lone surrogate", "/jobs", dict(data=b'{"text": "\\ud800"}', headers=JSON), 400, "invalid_text"),
    ("texts not a list", "/jobs", dict(json={"texts": "one"}), 400, "invalid_texts"),
    ("texts empty", "/jobs", dict(json={"texts": []}), 400, "empty_texts"),
    ("texts with a number", "/jobs", dict(json={"texts": ["ok", 3]}), 400, "invalid_text"),
    ("too many texts", "/jobs", dict(json={"texts": ["t"] * (MAX_TEXTS + 1)}), 400, "too_many_texts"),
    ("body too large", "/jobs", dict(json={"text": "x" * MAX_BODY}), 413, "body_too_large"),
    ("plain text to /jobs", "/jobs", dict(data=b"hello", headers={"Content-Type": "text/plain"}), 415,
     "unsupported_media_type"),
    ("no content type", "/jobs", dict(data=b'{"text": "hi"}'), 415, "unsupported_media_type"),
    ("seed: xml", "/new_request", dict(data=b"<t/>", headers={"Content-Type": "application/xml"}), 415,
     "unsupported_media_type"),
    ("seed: empty plain", "/new_request", dict(data=b"", headers={"Content-Type": "text/plain"}), 400,
     "missing_text"),
    ("seed: form without text", "/new_request", dict(data={"other": "x"}), 400, "missing_text"),
    ("seed: json without text", "/new_request", dict(json={"msg": "x"}), 400, "missing_text"),
    ("seed: plain not utf-8", "/new_request", dict(data=b"\xff", headers={"Content-Type": "text/plain"}), 400,
     "invalid_text"),
    ("seed: too large", "/new_request", dict(data=b"x" * (MAX_BODY + 1), headers={"Content-Type": "text/plain"}),
     413, "body_too_large"),
    ("seed: raw bytes not utf-8", "/new_request", dict(data=b"Request number \xff"), 400, "invalid_text"),
    ("seed: octet-stream not utf-8", "/new_request",
     dict(data=b"\xc3\x28", headers={"Content-Type": "application/octet-stream"}), 400, "invalid_text"),
    ("seed: empty raw body", "/new_request", dict(data=b""), 400, "missing_text"),
    ("seed: blank raw body", "/new_request", dict(data=b" \n "), 400, "empty_text"),
    ("seed: raw body too large", "/new_request", dict(data=b"x" * (MAX_BODY + 1)), 413, "body_too_large"),
    ("seed: octet-stream too large", "/new_request",
     dict(data=b"x" * (MAX_BODY + 1), headers={"Content-Type": "application/octet-stream"}), 413, "body_too_large"),
]

# The seed report calls the seed's route /new_requests: it refuses exactly what /new_request refuses.
CASES += [(f"{name} (as /new_requests)", "/new_requests", kwargs, status, code)
          for name, path, kwargs, status, code in CASES if path == "/new_request"]


def queue_state(redis_client):
    """Queue length and number of job records, once earlier tests' jobs have drained."""
    from inferq.contract import lane_queues
    from inferq.stack.processes import wait_until

    def waiting():  # both lanes: a refused bulk job must not reach the bulk lane either
        return sum(redis_client.llen(name) for name in lane_queues(QUEUE).values())

    wait_until(lambda: waiting() == 0, 30, "queue to drain")
    return waiting(), len(list(redis_client.scan_iter("inferq:job:*")))


@pytest.mark.parametrize("name,path,kwargs,status,code", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_and_enqueues_nothing(http, api_url, redis_client, name, path, kwargs, status, code):
    before = queue_state(redis_client)
    response = http.post(api_url + path, **kwargs)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code
    assert isinstance(body["message"], str) and body["message"]
    assert queue_state(redis_client) == before


@pytest.mark.parametrize("wait", ["soon", "-1", "nan"])
def test_bad_wait_is_400(http, api_url, wait):
    job_id = http.post(f"{api_url}/jobs", json={"text": "hello"}).json()["job_id"]
    response = http.get(f"{api_url}/jobs/{job_id}", params={"wait": wait})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_wait"


def test_unknown_route_and_method_are_json(http, api_url):
    missing = http.get(f"{api_url}/nope")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    wrong = http.delete(f"{api_url}/jobs")
    assert wrong.status_code == 405 and wrong.json()["error"] == "method_not_allowed"
