"""A worker cut off from Redis for 30 s reconnects by itself; nothing lost, nothing stored twice."""
from __future__ import annotations

import time

import pytest
import requests

from inferq.broker.wire import result_key
from inferq.contract import WORKERS_KEY
from inferq.tasks.faults import SLEEP_PREFIX
from tests.figures import record
from tests.reliability.proxy import PartitionProxy
from tests.reliability.stack import HOST, Stack, submit

pytestmark = pytest.mark.slow

PARTITION_SECONDS = 30


@pytest.fixture(scope="module")
def partitioned(tiny_model, tmp_path_factory):
    """Our Redis, one worker (w3) that reaches it only through a proxy, and the API (direct)."""
    s = Stack(tmp_path_factory.mktemp("partition-stack"), tiny_model)
    s.start_redis()
    proxy = PartitionProxy(s.redis.port).start()
    try:
        via_proxy = s.redis.url.replace(f":{s.redis.port}/", f":{proxy.port}/")
        s.worker_env["w3"] = s.service_env(REDIS_URL=via_proxy)
        s.start_workers(["w3"])
        s.api = s.start_api()
        yield s, proxy
    finally:
        proxy.stop()
        s.stop()


def heartbeat_age(stack) -> float:
    score = stack.client.zscore(WORKERS_KEY, f"w3@{HOST}")
    return time.time() - score if score else float("inf")


def test_partition_worker_from_redis_for_30s(partitioned):
    stack, proxy = partitioned
    with requests.Session() as http:
        # A job in flight on w3 when the link goes down.
        in_flight = submit(http, stack.api, f"{SLEEP_PREFIX}3").json()["job_id"]
        deadline = time.monotonic() + 10
        while stack.deliveries([in_flight])[in_flight] == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert stack.holder(in_flight) == "w3" and stack.meta(in_flight) is None  # started, not finished
        proxy.partition()
        cut_at = time.monotonic()
        # Clients keep submitting during the partition: the API reaches Redis, the worker does not.
        during = []
        while time.monotonic() < cut_at + PARTITION_SECONDS:
            response = submit(http, stack.api, f"during the partition {len(during)}")
            assert response.status_code == 202
            during.append(response.json()["job_id"])
            time.sleep(0.5)
        processed_during = sum(s == "SUCCESS" for s in stack.statuses(during).values())
        beat_age_at_heal = heartbeat_age(stack)
        proxy.heal()
        healed_at = time.monotonic()
        reconnected = drained = None
        # Wait for both: the backlog can drain before the heartbeat thread's next
        # beat (it may be sitting out a socket timeout from the partition).
        while time.monotonic() < healed_at + 60 and None in (reconnected, drained):
            if reconnected is None and heartbeat_age(stack) < 1.0:
                reconnected = time.monotonic() - healed_at
            if drained is None and all(s == "SUCCESS" for s in stack.statuses([in_flight, *during]).values()):
                drained = time.monotonic() - healed_at
            time.sleep(0.1)
        after = [submit(http, stack.api, f"after the partition {i}").json()["job_id"] for i in range(20)]
        after_states = stack.wait_done(after, timeout=20)
    ids = [in_flight, *during, *after]
    states = {**stack.statuses(ids)}
    lost = [j for j, s in states.items() if s != "SUCCESS"]
    deliveries = stack.deliveries(ids)
    stored = sum(1 for j in ids if stack.client.exists(result_key(j)))
    record("partition a worker from Redis", partition_s=PARTITION_SECONDS, accepted=len(ids),
           processed_during_partition=processed_during, heartbeat_age_at_heal_s=beat_age_at_heal,
           heartbeat_back_after_heal_s=reconnected, backlog_done_after_heal_s=drained,
           succeeded=len(ids) - len(lost), lost=len(lost), stored_results=stored,
           run_more_than_once=sum(d > 1 for d in deliveries.values()),
           in_flight_job_deliveries=deliveries[in_flight])
    assert processed_during == 0, "the worker was not cut off"
    assert reconnected is not None, "the worker did not reconnect within 60 s"
    assert lost == []
    assert stored == len(ids)
    assert all(s == "SUCCESS" for s in after_states.values())
    assert stack.workers["w3"].poll() is None, "the worker exited instead of reconnecting"
