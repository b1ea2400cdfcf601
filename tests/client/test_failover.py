"""The client with several API addresses: two real APIs (gunicorn) on the session's Redis and workers.

A request goes to the address that answered last and moves to the next when one cannot be reached, drops
the connection or answers 502/503/504; an API's own answer (a 4xx) is final; a certificate that is not the
pinned one stops it. Submits carry an Idempotency-Key, so a submit retried on the second API after the
first queued it but never said so returns the same job. Faults come from tests/client/faults.py, a proxy in
front of a real API.
"""
from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence

import pytest

from inferq.client.api import Client
from inferq.stack import processes
from inferq.stack.processes import BIN
from inferq.stack.redis_server import free_port
from tests.client.faults import ANSWER_502, FORWARD_THEN_503, FORWARD_THEN_DROP, FaultProxy, certificate
from tests.conftest import start_api

MISSING = "f" * 32


def inferq(*args: str, apis: Sequence[str] = (), env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the console script as a user would, with one --api per address."""
    flags = [flag for api in apis for flag in ("--api", api)]
    return subprocess.run([str(BIN / "inferq"), *flags, *args], capture_output=True, text=True, timeout=90,
                          env={**os.environ, **(env or {})})


def dead() -> str:
    """An address where nothing listens."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture(scope="module")
def other_api(service_env, workers, tmp_path_factory):
    """A second API process on the same Redis as api_url's (two orchestrators' APIs)."""
    process, base = start_api(service_env, tmp_path_factory.mktemp("other-api"))
    yield base
    processes.stop(process)


@pytest.fixture()
def proxies():
    started: list[FaultProxy] = []

    def start(target: str, **options) -> FaultProxy:
        started.append(FaultProxy(target, **options).start())
        return started[-1]
    yield start
    for proxy in started:
        proxy.stop()


def test_first_address_never_started_submits_and_results_go_through_the_second(api_url):
    submitted = inferq("submit", "the first one is not there", apis=[dead(), api_url])
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    # The same addresses as one comma-separated INFERQ_API_URL.
    result = inferq("result", job_id, "--wait", "30", env={"INFERQ_API_URL": f"{dead()},{api_url}"})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["status"] == "succeeded"
    waited = inferq("submit", "and wait for it", "--wait", "30", apis=[dead(), api_url])
    assert waited.returncode == 0 and json.loads(waited.stdout)["status"] == "succeeded", waited.stderr


def test_first_api_killed_its_jobs_are_read_and_new_ones_submitted_through_the_second(api_url, service_env,
                                                                                      tmp_path):
    process, first = start_api(service_env, tmp_path)
    try:
        submitted = inferq("submit", "queued through the first", apis=[first, api_url])
        assert submitted.returncode == 0, submitted.stderr
    finally:
        processes.stop(process)
    job_id = submitted.stdout.strip()
    # A job id is good on any address: the APIs share the Redis.
    result = inferq("result", job_id, "--wait", "30", apis=[first, api_url])
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["job_id"] == job_id
    again = inferq("submit", "the first is gone", "--wait", "30", apis=[first, api_url])
    assert again.returncode == 0 and json.loads(again.stdout)["status"] == "succeeded", again.stderr


def test_an_address_that_takes_the_connection_but_never_answers_times_out_to_the_next(api_url):
    import socket

    with socket.create_server(("127.0.0.1", 0)) as silent:  # the kernel accepts, nobody ever reads or answers
        address = f"http://127.0.0.1:{silent.getsockname()[1]}"
        run = inferq("--http-timeout", "1", "submit", "the first one hangs", apis=[address, api_url])
        assert run.returncode == 0 and len(run.stdout.strip()) == 32, run.stderr
        both = inferq("--http-timeout", "1", "status", run.stdout.strip(), apis=[address, dead()])
    assert both.returncode == 3
    assert f"{address} (no answer within 1s)" in both.stderr and "connection refused" in both.stderr


def test_both_down_is_one_line_naming_each_address_and_exit_3():
    first, second = dead(), dead()
    run = inferq("submit", "nobody home", apis=[first, second])
    assert run.returncode == 3 and "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("inferq: cannot reach the API at any of its 2 addresses: ")
    assert f"{first} (connection refused); {second} (connection refused)" in lines[0]


@pytest.mark.parametrize("fault", [FORWARD_THEN_503, FORWARD_THEN_DROP])
def test_a_submit_the_first_api_queued_but_did_not_confirm_is_the_same_job_on_the_second(
        fault, api_url, other_api, proxies):
    first = proxies(other_api, faults=[fault])
    run = inferq("submit", f"queued once despite {fault}", apis=[first.url, api_url])
    assert run.returncode == 0, run.stderr
    job_id = run.stdout.strip()
    # The first API created the job (the proxy saw its answer) and the second answered with that very job.
    [seen] = first.seen
    assert seen.method == "POST" and seen.idempotency_key and seen.upstream_job_id == job_id
    result = inferq("result", job_id, "--wait", "30", apis=[api_url])
    assert json.loads(result.stdout)["status"] == "succeeded", result.stderr


def test_without_the_key_the_same_fault_would_have_queued_two_jobs(other_api, api_url, proxies):
    """What the Idempotency-Key prevents: the API behind the fault did queue a job the client never heard of."""
    import requests

    first = proxies(other_api, faults=[FORWARD_THEN_503])
    answered = requests.post(first.url + "/jobs", json={"text": "no key"}, timeout=10)
    retried = requests.post(api_url + "/jobs", json={"text": "no key"}, timeout=10)
    assert answered.status_code == 503 and retried.status_code == 202
    assert first.seen[0].upstream_job_id not in (None, retried.json()["job_id"])


def test_an_api_answer_such_as_404_is_final_the_next_address_is_not_asked(other_api, api_url, proxies):
    second = proxies(api_url)
    run = inferq("status", MISSING, apis=[other_api, second.url])
    assert run.returncode == 1 and "404 job_not_found" in run.stderr, run.stderr
    assert second.seen == []


def test_the_client_sticks_to_the_address_that_answered_until_it_fails(other_api, api_url, proxies):
    first, second = proxies(other_api, default=ANSWER_502), proxies(api_url)
    client = Client([first.url, second.url])
    job_id = client.submit("sticky")
    assert (len(first.seen), len(second.seen)) == (1, 1) and client.current == second.url
    for _ in range(3):
        client.job(job_id)
    assert (len(first.seen), len(second.seen)) == (1, 4)  # no round robin: the one that answered
    first.default, second.default = "forward", ANSWER_502
    assert client.wait(job_id, 30)["status"] == "succeeded"
    assert client.current == first.url
    client.job(job_id)
    assert len(second.seen) == 5  # failed once, then left alone


@pytest.fixture()
def tls_apis(other_api, api_url, proxies, tmp_path):
    """Two HTTPS addresses, each with its own certificate, in front of the two APIs: (proxy, fingerprint) each."""
    cert_a, key_a, made_a = certificate(tmp_path, "a", ["127.0.0.1"])
    cert_b, key_b, made_b = certificate(tmp_path, "b", ["127.0.0.1"])
    return ((proxies(other_api, tls_files=(cert_a, key_a)), made_a.sha256),
            (proxies(api_url, tls_files=(cert_b, key_b)), made_b.sha256))


def test_each_address_is_checked_against_its_own_pinned_certificate(tls_apis):
    (a, sha_a), (b, sha_b) = tls_apis
    # One fingerprint per address, in order; the first address down: the second, with its own pin.
    down = f"https://127.0.0.1:{free_port()}"
    run = inferq("--api-cert-sha256", sha_a, "--api-cert-sha256", sha_b, "submit", "pinned", "--wait", "30",
                 apis=[down, b.url])
    assert run.returncode == 0 and json.loads(run.stdout)["status"] == "succeeded", run.stderr
    # The same as the environment's comma-separated lists.
    env = {"INFERQ_API_URL": f"{a.url},{b.url}", "INFERQ_API_CERT_SHA256": f"{sha_a},{sha_b}"}
    job_id = json.loads(run.stdout)["job_id"]
    assert inferq("status", job_id, env=env).stdout.split() == [job_id, "succeeded"]
    assert len(a.seen) == 1 and len(b.seen) == 1
    miscounted = inferq("--api-cert-sha256", sha_a, "--api-cert-sha256", sha_b, "--api-cert-sha256", sha_b,
                        "status", job_id, apis=[a.url, b.url])
    assert miscounted.returncode == 2 and "3 certificate fingerprints for 2 API addresses" in miscounted.stderr


def test_a_certificate_that_is_not_the_pinned_one_stops_there_without_trying_the_next(tls_apis):
    (a, _), (b, sha_b) = tls_apis
    # a shows its own certificate, but the client pins b's for it: someone else answers at a's address.
    run = inferq("--api-cert-sha256", f"{sha_b},{sha_b}", "submit", "never sent", apis=[a.url, b.url])
    assert run.returncode == 3 and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines() == [
        f"inferq: the API at {a.url}: its TLS certificate is not the pinned one: check INFERQ_API_CERT_SHA256, "
        "and who answers there; the other addresses were not tried"]
    assert a.seen == [] and b.seen == []  # nothing sent to a (the check comes first), b never asked


def test_fab_submit_uses_every_orchestrator_in_the_inventory_each_with_its_own_certificate(
        other_api, api_url, tmp_path):
    """`fab submit` with two orchestrators in the inventory (on 127.0.0.1 and 127.0.0.2, the cluster's one HTTPS
    port): the first with the cluster's certificate (api-tls.crt, as today), the second with its own
    (api-orchestrator-2-tls.crt). While the first answers, it takes the job; once it is gone, the second."""
    from inferq.deploy import inventory as inv
    from inferq.deploy import tls
    from tests.conftest import ROOT

    secrets = tmp_path / "secrets"
    cluster_cert = tls.load_or_create(secrets, "t", ["127.0.0.1"])
    own_cert, own_key = tls.host_paths(secrets, "t", "orchestrator-2")
    own = tls.generate("t", ["127.0.0.2"])
    own_cert.write_bytes(own.cert_pem)
    own_key.write_bytes(own.key_pem)
    cert_path, key_path = tls.paths(secrets, "t")
    for _ in range(5):  # one port free on both addresses
        second = FaultProxy(api_url, host="127.0.0.2", tls_files=(own_cert, own_key)).start()
        try:
            first = FaultProxy(other_api, port=second.port, tls_files=(cert_path, key_path)).start()
            break
        except OSError:
            second.stop()
    else:
        raise AssertionError("no port free on both 127.0.0.1 and 127.0.0.2")
    assert tls.load_for(secrets, "t", "orchestrator").sha256 == cluster_cert.sha256
    hosts = [inv.Host("orchestrator-2", "orchestrator", "127.0.0.2", "10.0.0.2"),  # name order, not file order
             inv.Host("orchestrator", "orchestrator", "127.0.0.1", "10.0.0.1")]
    inventory = tmp_path / "inventory.json"
    inv.write(inv.Inventory(cluster="t", hosts=hosts, key_file="", https_port=second.port), inventory)

    def fab_submit(text: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "fab"), "-r", str(ROOT / "deploy"), "submit", "--text", text,
                               "--inventory", str(inventory), "--secrets", str(secrets)],
                              capture_output=True, text=True, timeout=90)

    try:
        run = fab_submit("both orchestrators up")
        assert run.returncode == 0 and json.loads(run.stdout)["status"] == "succeeded", run.stderr
        assert [s.method for s in first.seen] == ["POST"] and second.seen == []
        first.stop()
        run = fab_submit("the first orchestrator is gone")
        assert run.returncode == 0 and json.loads(run.stdout)["status"] == "succeeded", run.stderr
        assert [s.method for s in second.seen][:1] == ["POST"]
    finally:
        second.stop()
        first.stop()
