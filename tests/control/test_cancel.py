"""DELETE /jobs/<id> against real workers: a queued job never runs, a running one's result is discarded."""
from __future__ import annotations

import secrets
import subprocess
import sys
import time
from pathlib import Path

import requests

from inferq.contract import lane_queues
from inferq.stack.processes import wait_until
from inferq.tasks.faults import SLEEP_PREFIX
from tests.reliability.stack import log_text, submit

INFERQ = str(Path(sys.executable).parent / "inferq")


def occupy(http, control, seconds: float = 1.5, jobs: int = 4) -> list[str]:
    """Jobs that keep both workers busy for a while, and some waiting behind them."""
    return [submit(http, control.api, f"{SLEEP_PREFIX}{seconds}").json()["job_id"] for _ in range(jobs)]


def drained(control) -> bool:
    client = control.client
    return all(client.llen(q) == 0 for q in lane_queues("inferq").values()) and client.hlen("unacked") == 0


def worker_logs(control) -> str:
    return "".join(log_text(control.log(name)) for name in control.workers)


def test_a_queued_job_cancelled_never_runs_and_stays_cancelled(control):
    with requests.Session() as http:
        busy = occupy(http, control)
        single = submit(http, control.api, "cancel me before I run").json()["job_id"]
        bulk = http.post(control.api + "/jobs", json={"texts": ["a bulk", "job"]}).json()["job_id"]
        first = http.delete(f"{control.api}/jobs/{single}")
        assert first.status_code == 200, first.text
        assert first.json() == {"job_id": single, "status": "cancelled"}
        again = http.delete(f"{control.api}/jobs/{single}")  # idempotent
        assert (again.status_code, again.json()) == (200, first.json())
        # The CLI, on the bulk job.
        done = subprocess.run([INFERQ, "--api", control.api, "cancel", bulk], capture_output=True, text=True,
                              timeout=30)
        assert done.returncode == 0 and done.stdout.strip() == f"{bulk} cancelled", done.stderr
        assert http.get(f"{control.api}/jobs/{single}").json()["status"] == "cancelled"

        assert control.wait_done(busy, timeout=30) == {j: "SUCCESS" for j in busy}
        wait_until(lambda: drained(control), 30, "both lanes to drain")
        time.sleep(1)  # any worker that took them has had time to store something
        for job_id in (single, bulk):
            job = http.get(f"{control.api}/jobs/{job_id}").json()
            assert job["status"] == "cancelled" and "results" not in job, job
            assert control.meta(job_id)["status"] == "REVOKED"
            # Never run: either no worker started it (the revoke broadcast dropped it on
            # receipt), or the one that took it skipped it before inference.
            started = control.deliveries([job_id])[job_id]
            assert started == 0 or f"job {job_id} cancelled before it ran: skipped" in worker_logs(control)
        assert f"Task inferq.classify[{single}] succeeded" not in worker_logs(control)


def test_a_running_job_cancelled_has_its_result_discarded(control):
    with requests.Session() as http:
        job_id = submit(http, control.api, f"{SLEEP_PREFIX}2").json()["job_id"]
        wait_until(lambda: control.holder(job_id) is not None, 20, "the job to start")
        first = http.delete(f"{control.api}/jobs/{job_id}")
        assert first.status_code == 202, first.text
        assert first.json() == {"job_id": job_id, "status": "cancel_requested"}
        again = http.delete(f"{control.api}/jobs/{job_id}")
        assert (again.status_code, again.json()) == (202, first.json())
        assert http.get(f"{control.api}/jobs/{job_id}").json()["status"] == "cancel_requested"
        job = http.get(f"{control.api}/jobs/{job_id}", params={"wait": 20}).json()
        assert job["status"] == "cancelled" and "results" not in job, job
        assert control.meta(job_id)["status"] == "REVOKED"
        assert f"job {job_id} cancelled while it ran: its result is discarded" in worker_logs(control)
        final = http.delete(f"{control.api}/jobs/{job_id}")
        assert (final.status_code, final.json()["status"]) == (200, "cancelled")


def test_finished_unknown_and_other_keys_jobs_are_refused(control):
    keys = (secrets.token_urlsafe(24), secrets.token_urlsafe(24))
    keyed = control.start_api(INFERQ_API_KEYS=",".join(keys))
    with requests.Session() as http:
        job_id = submit(http, control.api, "done soon").json()["job_id"]
        assert http.get(f"{control.api}/jobs/{job_id}", params={"wait": 20}).json()["status"] == "succeeded"
        finished = http.delete(f"{control.api}/jobs/{job_id}")
        assert (finished.status_code, finished.json()["error"]) == (409, "job_finished")
        assert http.get(f"{control.api}/jobs/{job_id}").json()["status"] == "succeeded"  # untouched

        unknown = http.delete(f"{control.api}/jobs/{'0' * 32}")
        assert (unknown.status_code, unknown.json()["error"]) == (404, "job_not_found")
        assert http.delete(f"{control.api}/jobs/not-an-id").status_code == 404

        busy = occupy(http, control, seconds=1.0)
        mine = http.post(keyed + "/jobs", json={"text": "mine"}, headers={"X-API-Key": keys[0]}).json()["job_id"]
        theirs = http.delete(f"{keyed}/jobs/{mine}", headers={"X-API-Key": keys[1]})
        assert (theirs.status_code, theirs.json()["error"]) == (404, "job_not_found")
        assert http.delete(f"{keyed}/jobs/{mine}").status_code == 401
        own = http.delete(f"{keyed}/jobs/{mine}", headers={"X-API-Key": keys[0]})
        assert own.status_code in (200, 202), own.text
        control.wait_done(busy, timeout=30)


def test_cancel_in_a_micro_batch(tmp_path_factory, tiny_model):
    """A micro-batching worker: a job of the batch still waiting is skipped, one running has its result
    discarded, the rest of the batch succeeds."""
    from tests.reliability.stack import Stack

    stack = Stack(tmp_path_factory.mktemp("batch-cancel"), tiny_model, INFERQ_BATCH_SIZE="4")
    stack.start_redis()
    try:
        api = stack.start_api()
        with requests.Session() as http:
            # Queued before the worker starts: it takes all three into one batch.
            running, waiting, kept = (submit(http, api, text).json()["job_id"]
                                      for text in (f"{SLEEP_PREFIX}2", "waits in the batch", "kept"))
            stack.start_workers(["w1"])
            wait_until(lambda: stack.holder(running) is not None, 20, "the first job of the batch to start")
            assert http.delete(f"{api}/jobs/{running}").status_code == 202
            assert http.delete(f"{api}/jobs/{waiting}").json()["status"] in ("cancelled", "cancel_requested")
            jobs = {j: http.get(f"{api}/jobs/{j}", params={"wait": 20}).json() for j in (running, waiting, kept)}
        assert jobs[running]["status"] == "cancelled" and "results" not in jobs[running]
        assert jobs[waiting]["status"] == "cancelled" and "results" not in jobs[waiting]
        assert jobs[kept]["status"] == "succeeded"
        log = log_text(stack.log("w1"))
        assert f"job {running} cancelled while it ran" in log
        assert stack.meta(waiting)["status"] == "REVOKED"
    finally:
        stack.stop()


def test_flower_sees_cancelled_jobs_revoked(control):
    """Flower builds its view from Celery's events: each cancelled job gets a task-revoked event."""
    import threading

    from celery import Celery

    seen: set[str] = set()
    errors: list[str] = []
    receivers: list = []
    stop = threading.Event()
    app = Celery("listener", broker=control.redis.url)

    def listen():
        # One subscription held for the whole test (events are Redis publishes: a receiver that
        # resubscribes now and then misses what is published in between), checking stop each second.
        while not stop.is_set():
            try:
                with app.connection_for_read() as connection:
                    receiver = app.events.Receiver(connection, handlers={
                        "task-revoked": lambda event: seen.add(event["uuid"]), "*": lambda event: None})
                    receivers.append(receiver)
                    receiver.should_stop = stop.is_set()
                    for _ in receiver.consume(limit=None, timeout=None, wakeup=False):
                        pass
            except Exception as exc:  # reconnect, and say so if the test fails
                errors.append(repr(exc))
                time.sleep(0.2)

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()

    def probe_seen() -> bool:  # events reach the listener: send one of our own until it arrives
        with app.events.default_dispatcher() as dispatcher:
            dispatcher.send("task-revoked", uuid="probe", terminated=False, signum=None, expired=False)
        time.sleep(0.2)
        return "probe" in seen

    wait_until(probe_seen, 20, f"the event listener to subscribe ({errors})")
    try:
        with requests.Session() as http:
            busy = occupy(http, control)
            queued = submit(http, control.api, "revoke me").json()["job_id"]
            assert http.delete(f"{control.api}/jobs/{queued}").status_code == 200
            running = submit(http, control.api, f"{SLEEP_PREFIX}1").json()["job_id"]
            wait_until(lambda: control.holder(running) is not None, 20, "the job to start")
            assert http.delete(f"{control.api}/jobs/{running}").status_code == 202
            control.wait_done(busy, timeout=30)
            wait_until(lambda: {queued, running} <= seen, 30,
                       f"task-revoked events of both jobs (queued {queued}, running {running})")
        assert {queued, running} <= seen, (queued, running, seen, errors)
    finally:
        stop.set()
        for receiver in receivers:
            receiver.should_stop = True  # checked every second, events or not
        thread.join(5)
