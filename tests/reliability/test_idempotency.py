"""Idempotency-Key: a retried submit gets the same job, even when the two requests race."""
from __future__ import annotations

import threading
import time
import uuid

import pytest
import requests

from inferq.api.store import MEMORY_READ_SECONDS
from inferq.contract import SUBMITTED_KEY
from inferq.stack import processes
from tests.figures import record
from tests.reliability.proxy import PartitionProxy

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


MOST_COMMANDS_PER_SUBMIT = 12
"""More Redis commands than one submit with a key sends (a lookup, the record's pipeline, the claim and queueing):
the cut below moves one command further each round until a submit goes through whole."""


def test_a_submit_cut_off_after_any_command_then_retried_gets_a_job_that_runs(stack):
    """The API's Redis link is cut after its 1st, 2nd ... command of a submit (that command runs, its reply and
    the rest are lost: the API killed, or its link or Redis lost, mid-submit); the client retries with the same
    key once the link is back. Whatever the cut left behind, the retry's 202 names a job that runs. (Written in
    two steps, the key's claim and the job's message let a cut between them answer 202 for a job never queued:
    the lab's failover test lost one so.)"""
    proxy = PartitionProxy(stack.redis.port).start()
    api = stack.start_api(REDIS_URL=stack.redis.url.replace(f":{stack.redis.port}/", f":{proxy.port}/"))
    process = stack.apis[-1]
    outcomes: list[tuple[int, bool, str]] = []  # (commands before the cut, whether the retry was a replay, its job)
    try:
        for commands in range(1, MOST_COMMANDS_PER_SUBMIT + 1):
            key, body = uuid.uuid4().hex, {"text": f"cut after {commands} command(s)"}
            time.sleep(MEMORY_READ_SECONDS + 0.1)  # each submit reads Redis's memory: the same commands each round
            proxy.partition_after(commands)
            first = _post(api, body, key)
            cut = proxy.partitioned.is_set()
            proxy.heal()
            if not cut:
                assert first.status_code == 202, first.text
                break
            assert first.status_code == 503 and first.json()["error"] == "redis_unavailable", first.text
            retry = _post(api, body, key)
            assert retry.status_code == 202, retry.text
            outcomes.append((commands, retry.headers.get("Idempotent-Replayed") == "true", retry.json()["job_id"]))
        else:
            pytest.fail(f"every submit was cut: more than {MOST_COMMANDS_PER_SUBMIT} commands per submit?")
        states = stack.wait_done([job for _, _, job in outcomes], timeout=30)
        record("idempotent submit cut mid-way", cuts=len(outcomes), commands_per_submit=commands,
               replayed=sum(replayed for _, replayed, _ in outcomes),
               succeeded=sum(state == "SUCCESS" for state in states.values()))
        assert len(outcomes) >= 3, outcomes  # the lookup, the record, the claim with its message at least
        assert any(replayed for _, replayed, _ in outcomes), outcomes  # a cut came after the key was claimed
        assert all(states[job] == "SUCCESS" for *_, job in outcomes), (outcomes, states)
        # And the API still knows each of them (a lost reply keeps the job's record: a replay names that job).
        polled = {job: requests.get(f"{api}/jobs/{job}", timeout=10) for *_, job in outcomes}
        assert all(r.status_code == 200 and r.json()["status"] == "succeeded" for r in polled.values()), \
            {job: r.text[:200] for job, r in polled.items()}
    finally:
        proxy.stop()
        processes.stop(process, timeout=10)
        stack.apis.remove(process)


def test_racing_submits_with_one_key_and_two_bodies_make_one_job_counted_once(stack):
    """One body wins the key; the other's requests get 409, whether they lost the claim itself or found it
    already made, and the job they did not make leaves no count behind (jobs_submitted goes up by one)."""
    key = uuid.uuid4().hex
    bodies = [{"text": "body a"}, {"texts": ["body b"]}]
    barrier = threading.Barrier(16)
    answers: list[tuple[int, requests.Response]] = []

    def racer(which: int) -> None:
        barrier.wait()
        answers.append((which, _post(stack.api, bodies[which], key)))

    counted_before = int(stack.client.get(SUBMITTED_KEY) or 0)
    threads = [threading.Thread(target=racer, args=(n % 2,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    accepted = {which for which, a in answers if a.status_code == 202}
    assert len(accepted) == 1, [(w, a.status_code) for w, a in answers]
    winner = accepted.pop()
    assert all(a.status_code == 409 and a.json()["error"] == "idempotency_key_reused"
               for which, a in answers if which != winner)
    assert len({a.json()["job_id"] for which, a in answers if which == winner}) == 1
    assert int(stack.client.get(SUBMITTED_KEY) or 0) - counted_before == 1
