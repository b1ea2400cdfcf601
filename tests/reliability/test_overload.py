"""Twice the workers' capacity offered: past the queue cap the API answers 429, fast, and Redis stays bounded."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from inferq.stack.stats import percentile
from inferq.tasks.faults import SLEEP_PREFIX
from tests.figures import record
from tests.reliability.load import one_submit

pytestmark = pytest.mark.slow

JOB_SECONDS = 0.05
"""Each job holds its worker this long, so two workers' capacity is known: about 2 / 0.05 = 40 jobs/s."""

QUEUE_CAP = 40
OFFERED_SECONDS = 6


def test_overload_twice_capacity(stack):
    stack.ensure_workers()
    api = stack.start_api(INFERQ_MAX_QUEUE_DEPTH=str(QUEUE_CAP), INFERQ_RETRY_AFTER="1")
    capacity = 2 / JOB_SECONDS
    rate = 2 * capacity
    client = stack.client
    baseline_memory = client.info("memory")["used_memory"]
    samples = []
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            samples.append((client.llen("inferq"), client.info("memory")["used_memory"]))
            stop.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    local = threading.local()

    def fire(i):
        if not hasattr(local, "session"):
            local.session = requests.Session()
        return one_submit(local.session, api, f"{SLEEP_PREFIX}{JOB_SECONDS}")

    # Open loop: requests go out on schedule whether or not earlier ones were answered.
    futures = []
    with ThreadPoolExecutor(16) as pool:
        # Warm up: open the clients' connections and the API's connections to Redis.
        warm = [f.job_id for f in pool.map(lambda i: fire(-1), range(48)) if f.job_id]
        stack.wait_done(warm, timeout=30)
        baseline_memory = client.info("memory")["used_memory"]
        started = time.monotonic()
        for i in range(int(rate * OFFERED_SECONDS)):
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(fire, i))
        outcomes = [f.result() for f in futures]
    offered_for = time.monotonic() - started
    stop.set()
    sampler.join()
    accepted = [o for o in outcomes if o.status == 202]
    refused = [o for o in outcomes if o.status == 429]
    states = stack.wait_done([o.job_id for o in accepted], timeout=60)
    latencies = [o.seconds for o in outcomes]
    slowest = sorted(latencies)[-5:]
    max_depth = max(d for d, _ in samples)
    peak_memory = max(m for _, m in samples)
    p99_ms = 1000 * percentile(latencies, 99)
    record("overload at twice capacity", offered=len(outcomes), offered_rate_per_s=len(outcomes) / offered_for,
           capacity_per_s=capacity, accepted=len(accepted), refused_429=len(refused),
           other=len(outcomes) - len(accepted) - len(refused),
           retry_after=sorted({o.retry_after for o in refused}), queue_cap=QUEUE_CAP, max_queue_depth=max_depth,
           submit_p50_ms=1000 * percentile(latencies, 50), submit_p99_ms=p99_ms, p99_target_ms=100,
           accepted_p99_ms=1000 * percentile([o.seconds for o in accepted], 99),
           refused_p99_ms=1000 * percentile([o.seconds for o in refused], 99),
           slowest_ms=[round(1000 * x) for x in slowest],
           redis_memory_growth_kib=(peak_memory - baseline_memory) / 1024,
           accepted_succeeded=sum(s == "SUCCESS" for s in states.values()))
    assert refused, "nothing was refused at twice capacity"
    assert all(o.retry_after == "1" for o in refused)
    assert len(accepted) + len(refused) == len(outcomes), "answers other than 202/429"
    # The cap is checked before each enqueue, not atomically with it: concurrent
    # submits can overshoot it by at most the number of requests in flight.
    assert max_depth <= QUEUE_CAP + 16
    assert all(s == "SUCCESS" for s in states.values())
    # Timing on a shared 2-core machine is noisy: the 100 ms target is reported
    # above; only a gross regression (a hanging submit) fails the test.
    assert p99_ms < 2000
