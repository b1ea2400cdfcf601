"""A worker restarted under its old name gives back the job its killed predecessor held, at once.

Without it that job would wait for the visibility timeout, an hour by default;
here it is ten minutes, so a job done within a minute of the kill was given back
by the restarted worker (tasks/recovery.py), not by Redis.
"""
from __future__ import annotations

import time

import requests

from inferq.contract import WORKERS_KEY
from inferq.tasks.faults import SLEEP_PREFIX
from tests.figures import record
from tests.reliability.stack import HOST, Stack, log_text, submit

VISIBILITY_TIMEOUT = 600
"""Long enough that Redis's own redelivery cannot explain a recovery within the test's bound."""

BOUND_S = 60
"""Kill to result, for the orphan: the restarted worker's model load and the job's own 3 s, with room."""


def test_a_restarted_worker_gives_back_its_dead_predecessors_job_only(tiny_model, tmp_path):
    stack = Stack(tmp_path, tiny_model, INFERQ_VISIBILITY_TIMEOUT=str(VISIBILITY_TIMEOUT))
    stack.start_redis()
    try:
        stack.start_workers(["w1", "w2"])
        api = stack.start_api()
        with requests.Session() as session:
            jobs = [submit(session, api, SLEEP_PREFIX + "3").json()["job_id"] for _ in range(2)]
        deadline = time.monotonic() + 30
        while {stack.holder(j) for j in jobs} != {"w1", "w2"} and time.monotonic() < deadline:
            time.sleep(0.05)
        held = {stack.holder(j): j for j in jobs}
        assert set(held) == {"w1", "w2"}, "each worker should hold one of the two jobs"
        orphan, other = held["w1"], held["w2"]

        killed_at, killed_wall = stack.kill_worker("w1"), time.time()
        stack.workers["w1"].wait(timeout=10)
        stack.client.zrem(WORKERS_KEY, f"w1@{HOST}")
        stack.start_workers(["w1"])  # as the stack's supervisor or a restart policy does: the same name
        restarted_s = time.monotonic() - killed_at
        states = stack.wait_done(jobs, timeout=BOUND_S)
        recovered_s = stack.meta(orphan)["result"]["finished_at"] - killed_wall if states[orphan] == "SUCCESS" \
            else float("inf")
        deliveries = stack.deliveries(jobs)
        log = log_text(stack.log("w1"))
        record("worker restarted under its name after SIGKILL mid-job",
               visibility_timeout_s=VISIBILITY_TIMEOUT, restarted_s=round(restarted_s, 2),
               orphan_done_s=round(recovered_s, 2), orphan_deliveries=deliveries[orphan],
               other_job_deliveries=deliveries[other], states=sorted(states.values()))
        assert states == {orphan: "SUCCESS", other: "SUCCESS"}
        assert recovered_s < BOUND_S < VISIBILITY_TIMEOUT
        assert deliveries[orphan] == 2  # given back and run again, once
        assert deliveries[other] == 1  # the live worker's job was left alone
        assert "gave back 1 job(s) that this worker's previous process" in log
    finally:
        stack.stop()
