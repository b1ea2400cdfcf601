"""An idle worker blocks on the wake list: it does not poll the lanes in a loop."""
from __future__ import annotations

import time

import psutil
import pytest

from tests.conftest import start_workers
from tests.figures import record

IDLE_SECONDS = 10
CPU_BOUND = 0.01
"""Share of one core an idle worker may use: a take and a wait per brpop_timeout (1 s), and a heartbeat."""


@pytest.mark.slow
def test_an_idle_worker_uses_under_one_percent_of_a_core(service_env, redis_client, tmp_path):
    [worker] = start_workers({**service_env, "INFERQ_QUEUE": "idle-test"}, ["idler"], redis_client, tmp_path)
    try:
        process = psutil.Process(worker.pid)
        time.sleep(3)  # past start-up: the model is warmed, the first collection done
        before, started = process.cpu_times(), time.monotonic()
        time.sleep(IDLE_SECONDS)
        after, seconds = process.cpu_times(), time.monotonic() - started
    finally:
        worker.terminate()
        worker.wait(10)
    share = (after.user + after.system - before.user - before.system) / seconds
    record("an idle worker", seconds=round(seconds, 1), cpu_share_of_a_core=round(share, 4), bound=CPU_BOUND)
    assert share <= CPU_BOUND
