"""Redis crashes, restarts from its AOF, or stops answering: what is lost, and how the API answers."""
from __future__ import annotations

import os
import random
import signal
import time

import pytest
import requests

from inferq.stack.stats import percentile
from tests.figures import record
from tests.reliability.load import Load, one_submit
from tests.reliability.stack import VISIBILITY_TIMEOUT

pytestmark = pytest.mark.slow

UNAVAILABLE_BOUND = 2.0
"""The API must answer within this many seconds when Redis is away (the issue's bound)."""


def crash_and_restart(stack, mode: str) -> dict:
    """Run load, kill -9 Redis, restart it from its AOF; return what was accepted, lost and when."""
    # Restart Redis with the mode under test in its config (graceful: nothing lost here).
    stack.redis.appendfsync = mode
    stack.redis.stop()
    stack.start_redis()
    stack.ensure_workers()
    assert stack.client.config_get("appendfsync")["appendfsync"] == mode
    load = Load(stack.api, threads=4, text=f"aof-{mode}").start()
    time.sleep(1.5)
    killed_at = time.monotonic()
    stack.redis.kill()
    time.sleep(1.0)
    stack.start_redis()
    restarted_at = time.monotonic()
    time.sleep(1.0)
    outcomes = load.stop()
    accepted = [o for o in outcomes if o.status == 202]
    ids = [o.job_id for o in accepted]
    states = stack.wait_done(ids, timeout=VISIBILITY_TIMEOUT + 30)
    lost = [o for o in accepted if states[o.job_id] != "SUCCESS"]
    before_kill = [o for o in accepted if o.sent + o.seconds <= killed_at]
    last_second = [o for o in before_kill if o.sent + o.seconds > killed_at - 1.0]
    first_ok = min((o.sent for o in accepted if o.sent > restarted_at), default=float("nan"))
    deliveries = stack.deliveries(ids)
    return dict(
        mode=mode, accepted=len(accepted), accepted_before_kill=len(before_kill),
        accepted_last_second_before_kill=len(last_second), succeeded=len(ids) - len(lost), lost=len(lost),
        lost_before_kill=sum(o in before_kill for o in lost),
        run_more_than_once=sum(d > 1 for d in deliveries.values()),
        refused_503=sum(o.status == 503 for o in outcomes),
        errors_5xx_other=sum(o.status >= 500 and o.status != 503 for o in outcomes),
        no_answer=sum(o.status == 0 for o in outcomes),
        submit_p50_ms=1000 * percentile([o.seconds for o in accepted], 50),
        first_accept_after_restart_s=first_ok - restarted_at,
    )


def test_kill_redis_under_load_and_restart_from_aof(stack):
    everysec = crash_and_restart(stack, "everysec")
    record("kill -9 Redis under load, restart from AOF", **everysec)
    always = crash_and_restart(stack, "always")
    record("kill -9 Redis under load, restart from AOF", **always)
    for figures in (everysec, always):
        assert figures["errors_5xx_other"] == 0 and figures["no_answer"] == 0
        assert figures["accepted"] > 0 and figures["accepted_before_kill"] > 0
    # appendfsync always (the default): every accepted job survives.
    assert always["lost"] == 0
    # everysec: only what was accepted before the crash can be lost (what Redis answered while it had postponed
    # its write behind a background fsync, up to about 2 s of it: docs/operations.md, "What can be lost"). On a
    # fast disk that is usually nothing; the figures say.
    assert everysec["lost"] == everysec["lost_before_kill"]


def _timed(fn):
    started = time.monotonic()
    try:
        response = fn()
        return response.status_code, time.monotonic() - started, response
    except requests.RequestException as exc:
        return 0, time.monotonic() - started, exc


def _probe(stack, http, known_job: str) -> list[tuple[str, int, float]]:
    results = []
    for _ in range(3):
        status, seconds, _ = _timed(lambda: http.post(stack.api + "/jobs", json={"text": "x"}, timeout=10))
        results.append(("submit", status, seconds))
        status, seconds, _ = _timed(lambda: http.get(f"{stack.api}/jobs/{known_job}", timeout=10))
        results.append(("poll", status, seconds))
    return results


@pytest.mark.parametrize("failure", ["killed", "frozen"])
def test_redis_down_answers_503_fast_and_recovers(stack, failure):
    """Redis killed (connections refused) or frozen (SIGSTOP: connections hang): 503 within 2 s."""
    stack.ensure_workers()
    with requests.Session() as http:
        known = http.post(stack.api + "/jobs", json={"text": "before"}, timeout=5).json()["job_id"]
        if failure == "killed":
            stack.redis.kill()
        else:
            os.kill(stack.redis.process.pid, signal.SIGSTOP)
        try:
            probes = _probe(stack, http, known)
        finally:
            if failure == "killed":
                stack.start_redis()
            else:
                os.kill(stack.redis.process.pid, signal.SIGCONT)
        back = time.monotonic()
        # Recovery without restarting anything: the next jobs are accepted and run.
        recovered = None
        while time.monotonic() < back + 30:
            outcome = one_submit(http, stack.api, "after")
            if outcome.status == 202:
                body = http.get(f"{stack.api}/jobs/{outcome.job_id}?wait=20", timeout=30).json()
                if body["status"] == "succeeded":
                    recovered = time.monotonic() - back
                    break
            time.sleep(0.1)
    statuses = sorted({s for _, s, _ in probes})
    slowest = max(s for _, _, s in probes)
    consuming, all_back_s = stack.consuming_workers()
    record(f"Redis {failure}", statuses=statuses, slowest_answer_s=slowest,
           requests=len(probes), job_succeeded_after_redis_back_s=recovered,
           workers_consuming_after=sorted(consuming), every_worker_consuming_after_s=all_back_s)
    assert statuses == [503], probes
    assert slowest < UNAVAILABLE_BOUND, probes
    assert recovered is not None, "no job succeeded within 30 s of Redis coming back"
    assert consuming == set(stack.workers), "a worker stopped taking jobs after Redis came back"


FREEZE_ROUNDS = 6


def test_every_worker_consumes_after_redis_freezes_under_load(stack):
    """Redis frozen again and again while workers are busy: none may stop fetching.

    A worker whose acknowledgement hits the freeze used to keep its prefetch slot
    for ever and never take another job (tasks/redis_transport.py); which worker
    and which round is chance, so the test freezes several times under load.
    """
    stack.ensure_workers()
    rng = random.Random(6)
    freezes = [round(rng.uniform(1.0, 4.0), 1) for _ in range(FREEZE_ROUNDS)]
    outcomes, consuming_after, all_back_s = [], [], []
    for seconds in freezes:
        # Load through the freeze (so acknowledgements meet it), stopped before the
        # check so the check's jobs do not queue behind a growing backlog.
        load = Load(stack.api, threads=4, text="freeze").start()
        try:
            time.sleep(1.0)
            os.kill(stack.redis.process.pid, signal.SIGSTOP)
            time.sleep(seconds)
        finally:
            os.kill(stack.redis.process.pid, signal.SIGCONT)
            outcomes += load.stop()
        consuming, seconds_to_all = stack.consuming_workers()
        consuming_after.append(sorted(consuming))
        all_back_s.append(round(seconds_to_all, 1))
    ids = [o.job_id for o in outcomes if o.status == 202]
    states = stack.wait_done(ids, timeout=VISIBILITY_TIMEOUT + 30)
    lost = sum(s != "SUCCESS" for s in states.values())
    record("Redis frozen repeatedly under load", rounds=FREEZE_ROUNDS, freezes_s=freezes,
           workers_consuming_after_each=consuming_after, every_worker_consuming_after_s=all_back_s,
           accepted=len(ids), lost=lost,
           run_more_than_once=sum(d > 1 for d in stack.deliveries(ids).values()))
    assert all(c == sorted(stack.workers) for c in consuming_after), consuming_after
    assert lost == 0
