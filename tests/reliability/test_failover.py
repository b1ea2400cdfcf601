"""Redis replicated under Sentinel: the primary killed under load, then the replica; nothing accepted is lost.

Two APIs and two workers on a primary, a replica and three Sentinels; four clients submit without pause
(two per API) and keep every 202. SIGKILL the primary: the Sentinels promote the replica within a few
seconds, every process follows without a restart, and the old primary comes back as the new one's replica
(restarted as a supervisor would, asking the Sentinels where the primary is). Then SIGKILL the replica:
the API refuses with 503 replication_unavailable (its WAIT finds no replica) until it is back.
"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.figures import record
from tests.reliability.load import Load, Outcome
from tests.reliability.replicated import ReplicatedStack, workers_kept_our_transport
from tests.reliability.stack import VISIBILITY_TIMEOUT

pytestmark = pytest.mark.slow

LOAD_SECONDS = 2.0
"""Load before and after each fault."""


@pytest.fixture(scope="module")
def replicated(tiny_model, tmp_path_factory):
    runs = tmp_path_factory.mktemp("failover-runs")
    stack = ReplicatedStack(tmp_path_factory.mktemp("failover"), tiny_model, INFERQ_TEST_RUN_LOG=str(runs))
    stack.runs = runs
    stack.start_redis()
    try:
        stack.start_workers(["w1", "w2"])
        stack.bases = [stack.start_api(), stack.start_api()]
        stack.api = stack.bases[0]
        yield stack
    finally:
        stack.stop()


def start_load(stack, text: str) -> list[Load]:
    """Four clients without pause, two per API."""
    return [Load(base, threads=2, text=f"{text}-{i}").start() for i, base in enumerate(stack.bases)]


def stop_load(loads: list[Load]) -> list[Outcome]:
    return [o for load in loads for o in load.stop()]


def runs_per_job(runs: Path) -> dict[str, int]:
    """How many times a worker stored each job (the workers' run logs: INFERQ_TEST_RUN_LOG)."""
    counts: dict[str, int] = {}
    for path in runs.glob("runs-*.log"):
        for line in path.read_text().splitlines():
            job_id = line.partition(" ")[0]
            counts[job_id] = counts.get(job_id, 0) + 1
    return counts


def settle_outcomes(stack, outcomes: list[Outcome]) -> dict:
    """Wait for every accepted job; count what was lost, run twice and answered."""
    ids = [o.job_id for o in outcomes if o.status == 202]
    states = stack.wait_done(ids, timeout=VISIBILITY_TIMEOUT + 60)
    runs = runs_per_job(stack.runs)
    return dict(accepted=len(ids), lost=sum(s != "SUCCESS" for s in states.values()),
                ran_twice=sum(runs.get(j, 0) > 1 for j in ids),
                answers_503=sum(o.status == 503 for o in outcomes),
                other_5xx=sum(o.status >= 500 and o.status != 503 for o in outcomes),
                no_answer=sum(o.status == 0 for o in outcomes))


def test_primary_killed_under_load_the_replica_takes_over_and_nothing_accepted_is_lost(replicated):
    stack = replicated
    stack.settled()
    old = stack.group.current_primary()
    loads = start_load(stack, "failover")
    time.sleep(LOAD_SECONDS)
    killed_at = time.monotonic()
    old.kill()
    while stack.group.master_address()[1] == old.port:
        assert time.monotonic() - killed_at < 30, "the Sentinels promoted no replica within 30 s"
        time.sleep(0.05)
    failover_s = time.monotonic() - killed_at
    stack.group.restart_as_replica(old)  # a supervisor restarting it, as the replica of the new primary
    stack.settled()
    back_at = time.monotonic()
    role = old.client().info("replication")["role"]
    time.sleep(LOAD_SECONDS)
    outcomes = stop_load(loads)
    figures = settle_outcomes(stack, outcomes)
    failovers = stack.group.failovers()
    first_accept = min((o.sent + o.seconds for o in outcomes if o.status == 202 and o.sent > killed_at),
                       default=float("nan"))
    record("failover", accepted=figures["accepted"], lost=figures["lost"], ran_twice=figures["ran_twice"],
           failover_s=failover_s, answers_503=figures["answers_503"], other_5xx=figures["other_5xx"],
           no_answer=figures["no_answer"], replica_back_s=back_at - killed_at,
           first_accept_after_kill_s=first_accept - killed_at, old_primary_back_as=role, failovers=failovers)
    codes = {o.error for o in outcomes if o.status == 503}
    assert figures["lost"] == 0 and figures["other_5xx"] == 0 and figures["no_answer"] == 0, figures
    assert codes <= {"redis_unavailable", "replication_unavailable"}, codes
    assert figures["accepted"] > 0 and first_accept == first_accept, "no job was accepted after the failover"
    assert role == "slave"
    # One kill, one failover: a second means the Sentinels called the primary they had just promoted down
    # (a down-after too short for Sentinel's one-second PING: settings.parts.MIN_DOWN_AFTER_SECONDS).
    assert failovers == 1, f"the Sentinels failed over {failovers} times for one primary killed"
    consuming, _ = stack.consuming_workers()
    assert consuming == set(stack.workers), "a worker stopped taking jobs after the failover"
    workers_kept_our_transport(stack)


def test_replica_killed_the_api_refuses_with_503_and_loses_nothing(replicated):
    stack = replicated
    stack.settled()
    replica = stack.group.current_replica()
    loads = start_load(stack, "no-replica")
    time.sleep(LOAD_SECONDS)
    os.kill(replica.pid, signal.SIGKILL)
    replica.process.wait()
    killed_at = time.monotonic()
    time.sleep(LOAD_SECONDS)
    restarted_at = time.monotonic()
    stack.group.restart_as_replica(replica)
    stack.settled()
    settled_at = time.monotonic()
    time.sleep(LOAD_SECONDS)
    outcomes = stop_load(loads)
    figures = settle_outcomes(stack, outcomes)
    while_down = [o for o in outcomes if o.sent > killed_at and o.sent + o.seconds < restarted_at]
    after = [o for o in outcomes if o.sent > settled_at]
    record("replica killed", **figures, answers_while_down=len(while_down),
           refused_while_down=sum(o.error == "replication_unavailable" for o in while_down),
           accepted_after_back=sum(o.status == 202 for o in after))
    assert figures["lost"] == 0 and figures["other_5xx"] == 0 and figures["no_answer"] == 0, figures
    assert while_down and all(o.status == 503 and o.error == "replication_unavailable" for o in while_down), \
        [(o.status, o.error) for o in while_down]
    assert any(o.status == 202 for o in after), "nothing was accepted once the replica was back"
    workers_kept_our_transport(stack)

