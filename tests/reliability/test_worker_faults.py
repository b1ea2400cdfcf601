"""Workers die or are stopped mid-run: no accepted job is lost, none is stored twice."""
from __future__ import annotations

import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from inferq.broker.wire import UNACKED_KEY, result_key
from inferq.contract import HOLDING_KEY
from inferq.tasks.faults import KILL_WORKER, SLEEP_PREFIX
from tests.figures import record
from tests.reliability.stack import HOST, VISIBILITY_TIMEOUT, log_text, submit

pytestmark = pytest.mark.slow

RESTORE_SCAN = 1
"""Seconds between scans for unacknowledged jobs (celeryconfig: visibility timeout // 4, at least 1)."""

SLACK = 4
"""Seconds allowed on top for the restore itself and the rerun, on a busy shared machine."""


def submit_many(base: str, texts: list[str], threads: int = 8) -> list[str]:
    """Submit texts through the API concurrently; return the ids of the accepted (202) jobs."""
    local = threading.local()

    def one(text):
        if not hasattr(local, "session"):
            local.session = requests.Session()
        response = submit(local.session, base, text)
        return response.json()["job_id"] if response.status_code == 202 else None

    with ThreadPoolExecutor(threads) as pool:
        return [j for j in pool.map(one, texts) if j]


def running_on(stack, job_ids, worker: str) -> list[str]:
    """Jobs the named worker started that have no result yet."""
    states = stack.statuses(job_ids)
    return [j for j in job_ids if states[j] == "PENDING" and stack.holder(j) == worker]


def test_sigkill_worker_during_1000_jobs(stack):
    stack.ensure_workers()
    n = 1000
    texts = [f"job {i}: the queue must not lose me" for i in range(n)]
    # Jobs of 0.8 s spread over the whole run (the tiny model's own jobs last
    # milliseconds), so whenever the killer looks, w1 soon holds one: waiting for
    # a single cluster of them raced with the workers finishing it first.
    slow = range(200, n, 50)
    for i in slow:
        texts[i] = f"{SLEEP_PREFIX}0.8"
    accepted: list[str] = []
    killed = {}

    def killer():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            seen = [accepted[i] for i in slow if i < len(accepted)]
            if running_on(stack, seen, "w1"):
                killed["at"] = stack.kill_worker("w1")
                stack.workers["w1"].wait()
                # What it held when it died, as Redis recorded it (a job seen in flight may have finished
                # in the instant before the kill landed): nothing moves these until w1's leases run out.
                killed["jobs"] = [j for j in stack.client.smembers(HOLDING_KEY.format(f"w1@{HOST}"))
                                  if stack.client.hexists(UNACKED_KEY, j)]
                killed["jobs"] = [j.decode() for j in killed["jobs"]]
                if killed["jobs"]:
                    return
                stack.start_workers(["w1"])  # it held nothing after all: again
            time.sleep(0.005)

    started = time.monotonic()
    thread = threading.Thread(target=killer)
    thread.start()
    # Submit in slices so the killer sees accepted ids while the run goes on.
    for i in range(0, n, 100):
        accepted.extend(submit_many(stack.api, texts[i:i + 100]))
    thread.join()
    assert "at" in killed, "w1 never held a job to be killed"
    states = stack.wait_done(accepted, timeout=VISIBILITY_TIMEOUT + 30)
    elapsed = time.monotonic() - started
    succeeded = sum(s == "SUCCESS" for s in states.values())
    lost = [j for j, s in states.items() if s != "SUCCESS"]
    deliveries = stack.deliveries(accepted)
    redelivered = [j for j, d in deliveries.items() if d > 1]
    # Results are keyed by job id: one stored result per job, however often it ran.
    stored = sum(1 for j in accepted if stack.client.exists(result_key(j)))
    # When did the killed worker's job finish elsewhere? (its result records the time)
    finished = [stack.meta(j)["result"]["finished_at"] for j in killed["jobs"]]
    kill_wall = time.time() - (time.monotonic() - killed["at"])
    recovery = max(finished) - kill_wall
    record("SIGKILL a worker during a 1000-job run", accepted=len(accepted), succeeded=succeeded,
           lost=len(lost), run_more_than_once=len(redelivered), stored_results=stored,
           killed_in_flight=len(killed["jobs"]), killed_job_recovered_s=recovery,
           bound_s=VISIBILITY_TIMEOUT + RESTORE_SCAN + SLACK, run_s=elapsed)
    assert len(accepted) == n
    assert lost == [], f"{len(lost)} accepted jobs never succeeded"
    assert stored == n
    assert set(killed["jobs"]) <= set(redelivered), "the killed worker's job was not run again"
    assert recovery <= VISIBILITY_TIMEOUT + RESTORE_SCAN + SLACK
    stack.ensure_workers()


def test_sigterm_gives_in_flight_job_back_at_once(stack):
    stack.ensure_workers()
    with requests.Session() as http:
        job_id = submit(http, stack.api, f"{SLEEP_PREFIX}2").json()["job_id"]
        deadline = time.monotonic() + 15
        holder = None
        while holder is None and time.monotonic() < deadline:
            holder = stack.holder(job_id)
            time.sleep(0.02)
        assert holder, "no worker started the job"
        assert http.get(f"{stack.api}/jobs/{job_id}", timeout=5).json()["status"] == "running"
        other = "w2" if holder == "w1" else "w1"
        sent = stack.kill_worker(holder, signal.SIGTERM)
        given_back = exited = None
        while time.monotonic() < sent + VISIBILITY_TIMEOUT + 10:
            now = time.monotonic()
            if exited is None and stack.workers[holder].poll() is not None:
                exited = now - sent
            meta = stack.meta(job_id)
            if given_back is None and stack.holder(job_id) == other:
                given_back = now - sent
            if meta and meta["status"] == "SUCCESS" and exited is not None:
                break
            time.sleep(0.02)
        finished = time.monotonic() - sent
        body = http.get(f"{stack.api}/jobs/{job_id}", timeout=5).json()
    record("SIGTERM a worker with a job in flight", worker_exit_s=exited, restarted_elsewhere_s=given_back,
           job_done_s=finished, exit_code=stack.workers[holder].returncode,
           visibility_timeout_s=VISIBILITY_TIMEOUT)
    assert body["status"] == "succeeded" and body["worker"]["hostname"] == f"{other}@{HOST}"
    assert exited is not None and stack.workers[holder].returncode == 0
    # Given back at once: well before Redis would have restored it on its own.
    assert given_back is not None and given_back < VISIBILITY_TIMEOUT / 2
    assert "giving them back to the queue" in log_text(stack.log(holder))
    stack.ensure_workers()


def test_poison_job_fails_after_bounded_retries(stack):
    """A job that kills every worker running it is failed with its reason; others finish."""
    from inferq.settings import Worker, load

    max_deliveries = load(Worker, {}).max_deliveries  # the default (3): workers run with it too
    stack.ensure_workers()
    stop = threading.Event()

    def supervisor():  # a container restart policy: bring dead workers back
        while not stop.is_set():
            try:
                stack.ensure_workers()
            except RuntimeError:
                pass
            stop.wait(0.2)

    thread = threading.Thread(target=supervisor, daemon=True)
    thread.start()
    started = time.monotonic()
    try:
        with requests.Session() as http:
            poison = submit(http, stack.api, KILL_WORKER).json()["job_id"]
            others = [submit(http, stack.api, f"ordinary job {i}").json()["job_id"] for i in range(30)]
            states = stack.wait_done(others, timeout=30)
            others_done = time.monotonic() - started
            deadline = time.monotonic() + (max_deliveries + 1) * (VISIBILITY_TIMEOUT + 15)
            body = {}
            while time.monotonic() < deadline:
                body = http.get(f"{stack.api}/jobs/{poison}", timeout=5).json()
                if body["status"] in ("succeeded", "failed"):
                    break
                time.sleep(0.5)
    finally:
        stop.set()
        thread.join()
    deliveries = stack.deliveries([poison])[poison]
    record("poison job", status=body.get("status"), deliveries=deliveries, worker_deaths=deliveries - 1,
           failed_after_s=time.monotonic() - started,
           other_jobs_succeeded=f"{sum(s == 'SUCCESS' for s in states.values())}/{len(others)}",
           others_done_s=others_done)
    assert all(s == "SUCCESS" for s in states.values())
    assert body["status"] == "failed"
    assert "PoisonJob" in body["error"]["message"] and "INFERQ_MAX_DELIVERIES" in body["error"]["message"]
    assert deliveries == max_deliveries + 1
    stack.ensure_workers()
