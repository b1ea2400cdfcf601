"""A primary whose host vanishes, with one of the three Sentinels: the product through TLS Sentinels recovers fast.

test_sentinel_tls.py kills the primary: its connections are closed at once and every client learns of it on its
next read. A lost host closes nothing: the connections to it stay open and no reply ever comes, and the Sentinel
it ran is gone too. Here the primary and the first Sentinel of INFERQ_REDIS_SENTINELS are frozen (SIGSTOP): the
kernel still holds their sockets, nothing answers, as when a host's link goes down. The deploy lab's failover
test (tests/deploy/test_lab_ha.py) loses a whole host; this is the same fault in a minute, on loopback.
"""
from __future__ import annotations

import os
import signal
import threading
import time

import redis

from inferq.stack import processes
from tests.figures import record
from tests.security.test_redis_acl import wait_final
from tests.security.test_sentinel_tls import MASTER, Submitter, group, product  # noqa: F401  (fixtures)

RECOVERY_LIMIT = 30
"""Seconds after the fault by which a job submitted after it must have finished."""


def primary_named_by(group, sentinel_ports: list[int]) -> int | None:  # noqa: F811
    """The primary's port as these Sentinels name it (None while they disagree or cannot say)."""
    named = set()
    for port in sentinel_ports:
        try:
            named.add(int(group.sentinel(port).sentinel_get_master_addr_by_name(MASTER)[1]))
        except (redis.RedisError, OSError, TypeError):
            return None
    return named.pop() if len(named) == 1 else None


def test_the_product_recovers_fast_when_the_primarys_host_vanishes_with_a_sentinel(group, product, http):  # noqa: F811
    base, headers = product["api"], product["headers"]
    old, lost_sentinel = group.ports[0], group.sentinel_ports[0]
    live_sentinels = group.sentinel_ports[1:]
    assert group.primary_port() == old
    done = http.post(f"{base}/jobs?wait=20", json={"text": "before"}, headers=headers, timeout=30)
    assert done.status_code == 200 and done.json()["status"] == "succeeded", done.text
    # 20 submits a second at most: enough to see every moment of the fault, few enough to check each job.
    submitter = Submitter(base, headers, pause=0.05)
    thread = threading.Thread(target=submitter.run, daemon=True)
    thread.start()
    frozen = [group.processes[old].pid, group.processes[lost_sentinel].pid]
    try:
        time.sleep(1.5)
        fault = time.monotonic()
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        processes.wait_until(lambda: primary_named_by(group, live_sentinels) not in (None, old), 30,
                             "a replica promoted")
        failover_s = time.monotonic() - fault

        def first_done() -> float | None:
            """Seconds from the fault to the first finished job among those submitted after it."""
            for sent, status, job in list(submitter.outcomes):
                if status == 202 and sent > fault:
                    state = http.get(f"{base}/jobs/{job}", headers=headers, timeout=10).json()
                    if state.get("status") == "succeeded":
                        return time.monotonic() - fault
                    return None
            return None

        deadline = time.monotonic() + 120
        recovered_s = None
        while recovered_s is None and time.monotonic() < deadline:
            recovered_s = first_done()
            time.sleep(0.2)
    finally:
        submitter.stopping.set()
        thread.join(15)
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
    accepted = [job for _, status, job in submitter.outcomes if status == 202]
    states = {job: wait_final(http, base, job, headers, timeout=60)["status"] for job in accepted}
    lost = sum(state != "succeeded" for state in states.values())
    record("sentinel vanished host", accepted=len(accepted), lost=lost, failover_s=failover_s,
           first_done_after_fault_s=recovered_s)
    assert lost == 0, states
    assert recovered_s is not None and recovered_s < RECOVERY_LIMIT, recovered_s
