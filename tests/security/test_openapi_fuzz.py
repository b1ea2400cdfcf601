"""Fuzz the API from its own OpenAPI document: never a 5xx, and a refused request never queues anything."""
from __future__ import annotations

import json

import hypothesis.strategies as st
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import negative_data_rejection

from inferq.contract import lane_queues
from tests.ci import in_ci
from tests.figures import record
from tests.security.conftest import FUZZ_QUEUE

# CI judges a submission on a fixed sample of inputs, so a verdict can be
# reproduced; a developer's run draws new ones each time and explores further.
IN_CI = in_ci()

pytestmark = pytest.mark.slow

EXAMPLES_PER_OPERATION = 250
"""Generated requests per API operation and mode (operations without inputs stop early);
with the raw-body fuzz below, over 5,000 in all."""

RAW_EXAMPLES = 3600
SEED_ROUTES = ("POST /new_request", "POST /new_requests")
"""The seed's route under its two names (its code's and its report's)."""
COUNTS = {"requests": 0, "5xx": 0, "queued_by_rejected": 0, "accepted": 0}


@pytest.fixture(scope="module")
def api_schema(secure):
    return schemathesis.openapi.from_url(secure.api + "/openapi.json")


def _header(response, name: str) -> str | None:
    # requests' headers are case-insensitive; schemathesis' are a dict of lists.
    for key, value in response.headers.items():
        if key.lower() == name.lower():
            return value[0] if isinstance(value, list) else value
    return None


def _accepted(response) -> bool:
    """A job was queued: 202 from POST /jobs, 200 from POST /new_request (the seed's clients want 200).

    (DELETE /jobs/<id> answers 200 or 202 too, and queues nothing.)"""
    return response.request.method == "POST" and response.status_code in (200, 202)


def _queued(secure) -> int:
    """Messages waiting in both lanes of the fuzz queue (a bulk job goes to the bulk lane)."""
    return sum(secure.client.llen(name) for name in lane_queues(FUZZ_QUEUE).values())


def _check_queue(secure, before: int, response) -> None:
    status = response.status_code
    after = _queued(secure)
    COUNTS["requests"] += 1
    COUNTS["5xx"] += status >= 500
    if _accepted(response):
        COUNTS["accepted"] += 1
        # A replayed Idempotency-Key returns the earlier job and queues nothing.
        queued = 0 if _header(response, "Idempotent-Replayed") == "true" else 1
        assert after == before + queued, "an accepted job did not queue exactly one message"
    elif after != before:
        COUNTS["queued_by_rejected"] += 1
        raise AssertionError(f"a {status} answer changed the queue length {before} -> {after}")


def _serialized_valid(case, response) -> list:
    """Checks to skip for a case whose "invalid" data is valid once on the wire, or was refused before the API.

    A text/plain body of POST /new_request (or /new_requests) is the text itself: whatever schemathesis
    makes of it (an array, a number) is sent as text, a valid one. schemathesis sees
    that for a lone body or a lone one-item query array, not for both at once
    (wait=[5.5e16] with the body [] was answered 200, as it should be). And a 414 is
    gunicorn refusing a request line too long (a query of many waits): a rejection
    schemathesis does not count as one.
    """
    if response.status_code == 414:
        return [negative_data_rejection]
    if case.operation.label in SEED_ROUTES and (case.media_type or "").startswith("text/plain"):
        return [negative_data_rejection]
    return []


# schemathesis's own pytest plugin does not run under pytest 9 ('Function' has no
# '_nodeid'), so each operation's strategy is driven by Hypothesis directly.
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_generated_requests(api_schema, secure, mode):
    started = COUNTS["requests"]
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {op.label for op in operations} >= {"POST /jobs", "GET /jobs/{job_id}", "DELETE /jobs/{job_id}",
                                               *SEED_ROUTES}
    for operation in operations:
        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None, derandomize=IN_CI,
                  suppress_health_check=list(HealthCheck))
        def run(case):
            before = _queued(secure)
            response = case.call(timeout=10)
            _check_queue(secure, before, response)
            # Against the document: status codes, content types and bodies as described.
            case.validate_response(response, excluded_checks=_serialized_valid(case, response))

        try:
            run()
        except Unsatisfiable:
            # No input to make invalid (GET /healthz, /readyz; DELETE /jobs/{job_id}, whose only input is
            # a path segment, any string): nothing to fuzz negatively. The positive run fuzzes the id.
            free_path = all(p.definition["schema"] == {"type": "string"} for p in operation.path_parameters)
            assert mode is GenerationMode.NEGATIVE and free_path \
                and not operation.query and not operation.body, operation.label
    record(f"schemathesis {mode.value} requests", requests=COUNTS["requests"] - started)


# Raw bodies the document cannot describe: not UTF-8, deeply nested, huge,
# control characters, wrong types, wrong content types.
_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20))
_json_values = st.recursive(
    _scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=20)
_bodies = st.one_of(
    st.binary(max_size=300),  # mostly not UTF-8, not JSON
    st.builds(lambda b: b"\xff\xfe" + b, st.binary(max_size=50)),
    st.integers(1, 5000).map(lambda n: ("[" * n + "]" * n).encode()),  # deep JSON
    st.integers(1, 5000).map(lambda n: ('{"text":' * n + '"x"' + "}" * n).encode()),
    st.integers(60_000, 100_000).map(lambda n: json.dumps({"text": "a" * n}).encode()),  # huge field
    st.text(alphabet=st.characters(max_codepoint=0x1f), min_size=1, max_size=40)
    .map(lambda t: json.dumps({"text": t}).encode()),  # control characters
    st.builds(lambda v: json.dumps({"text": v}).encode(), _json_values),  # wrong types
    st.builds(lambda v: json.dumps({"texts": v}).encode(), _json_values),
    st.builds(lambda v: json.dumps(v).encode(), _json_values),
    st.just(b'{"text": "\\ud800"}'),  # a lone surrogate
    st.builds(lambda v: json.dumps({"text": "x", "priority": v}).encode(), _json_values),
    st.builds(lambda v: json.dumps({"texts": ["x", "y"], "callback_url": v}).encode(), _json_values),
)
_content_types = st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded",
                                  "application/json; charset=latin-1", "text/plain; charset=bogus",
                                  "multipart/form-data", "", "application/xml"])


@pytest.fixture(scope="module")
def http_session():
    with requests.Session() as session:
        yield session


@given(path=st.sampled_from(["/jobs", "/new_request", "/new_requests"]), body=_bodies, content_type=_content_types)
@settings(max_examples=RAW_EXAMPLES, deadline=None, database=None, derandomize=IN_CI,
          suppress_health_check=list(HealthCheck))
def test_raw_bodies(secure, http_session, path, body, content_type):
    before = _queued(secure)
    send = lambda: http_session.post(secure.api + path, data=body,  # noqa: E731
                                     headers={"Content-Type": content_type}, timeout=10)
    try:
        response = send()
    except requests.ConnectionError:
        # The kept-alive connection was closed after an earlier refused body
        # (413); the request never reached the API. A second failure is real.
        response = send()
    _check_queue(secure, before, response)
    assert response.status_code < 500, response.text
    assert response.headers["Content-Type"] == "application/json"
    if not _accepted(response):
        assert set(response.json()) == {"error", "message"}


CALLBACK_EXAMPLES = 400

_callback_urls = st.one_of(
    st.text(max_size=40),
    _json_values,
    # Literal addresses: every kind (loopback, private, link-local, mapped, public ...), no DNS lookup.
    st.ip_addresses().map(lambda ip: f"http://{ip}/hook" if ip.version == 4 else f"https://[{ip}]:8443/"),
    st.from_regex(r"\A(https?|ftp|file|gopher)://[0-9a-f.:\[\]@%]{0,30}(/[ -~]{0,20})?\Z"),
    st.sampled_from(["http://0/", "http://2130706433/", "http://0x7f.1/", "http://[::]/", "http:///x",
                     "http://localhost:9/", "https://user@8.8.8.8/", "http://8.8.8.8:0/", "http://8.8.8.8/#x"]),
)


@given(url=_callback_urls, priority=st.one_of(st.sampled_from(["normal", "low"]), _scalars))
@settings(max_examples=CALLBACK_EXAMPLES, deadline=None, database=None, derandomize=IN_CI,
          suppress_health_check=list(HealthCheck))
def test_callback_urls_and_priorities(secure, http_session, url, priority):
    """callback_url and priority on an API with callbacks on: 202, or 400 with one of their codes; never 5xx."""
    before = _queued(secure)
    body = json.dumps({"text": "x", "callback_url": url, "priority": priority})  # Infinity included
    response = http_session.post(secure.callback_api + "/jobs", timeout=10, data=body,
                                 headers={"Content-Type": "application/json"})
    _check_queue(secure, before, response)
    assert response.status_code in (202, 400), response.text
    if response.status_code == 400:
        assert response.json()["error"] in ("invalid_callback_url", "callback_url_not_allowed", "invalid_priority")


def test_fuzz_totals(secure):
    """Runs after the fuzz tests of this module: report and check their totals."""
    record("fuzz the API (schemathesis + hypothesis)", requests=COUNTS["requests"], errors_5xx=COUNTS["5xx"],
           accepted=COUNTS["accepted"], rejected_that_changed_the_queue=COUNTS["queued_by_rejected"])
    assert COUNTS["requests"] >= 5000
    assert COUNTS["5xx"] == 0 and COUNTS["queued_by_rejected"] == 0
