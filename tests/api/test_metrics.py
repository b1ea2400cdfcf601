"""/metrics: counters kept in Redis (right across gunicorn's processes and the workers) and the latency histogram."""
from __future__ import annotations

import time

import pytest

from inferq import contract
from inferq.api.metrics import read
from inferq.broker import wire
from inferq.stack.redis_server import RedisServer
from inferq.tasks.metrics import record_many


@pytest.fixture()
def fresh_redis(tmp_path):
    server = RedisServer(tmp_path, appendonly=False).start()
    yield server.client()
    server.stop()


def samples(text: str) -> dict[str, float]:
    """Prometheus text as {sample name with labels: value}."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_celery_and_kombu_keys_are_the_ones_the_contract_names():
    from kombu.transport.redis import Channel

    from inferq.celery_app import app

    assert app.backend.get_key_for_task("abc").decode() == wire.result_key("abc")
    assert Channel.keyprefix_queue == wire.BINDING_KEY.replace("{}", "%s")
    options = app.conf.broker_transport_options
    assert (options["unacked_key"], options["unacked_index_key"], options["unacked_mutex_key"]) == (
        wire.UNACKED_KEY, wire.UNACKED_INDEX_KEY, wire.UNACKED_MUTEX_KEY)


def test_histogram_buckets_are_cumulative_and_failures_counted(fresh_redis):
    fresh_redis.incr(contract.SUBMITTED_KEY)
    record_many(fresh_redis, [(True, 0.02)])     # 20 ms
    record_many(fresh_redis, [(True, 3.0)])      # 3 s
    record_many(fresh_redis, [(False, 1000.0)])  # past the last bound
    record_many(fresh_redis, [(True, None)])     # counted, no latency known
    fresh_redis.rpush("q", "a job", "another")
    fresh_redis.zadd(contract.WORKERS_KEY, {"w1@h": 50.0, "w2@h": 10.0, "w3@h": 1.0})
    values = read(fresh_redis, "q", fresh_after=20.0, missing_after=5.0)
    assert (values["submitted"], values["succeeded"], values["failed"]) == (1, 3, 1)
    # w2 stopped beating (killed): missing; w3 stopped before missing_after: retired, not counted.
    assert (values["queue_depth"], values["workers"], values["workers_missing"]) == (2, 1, 1)
    buckets = dict(values["latency_buckets"])
    assert buckets["0.01"] == 0 and buckets["0.025"] == 1 and buckets["2.5"] == 1 and buckets["5.0"] == 2
    assert buckets["300.0"] == 2 and buckets["+Inf"] == 3 == values["latency_count"]
    assert values["latency_sum"] == pytest.approx(0.02 + 3.0 + 1000.0)


def test_metrics_endpoint_counts_jobs_through_the_api(api_url, http):
    before = samples(http.get(api_url + "/metrics", timeout=10).text)
    job_ids = [http.post(api_url + "/jobs", json={"text": f"metric {i}"}, timeout=10).json()["job_id"]
               for i in range(3)]
    for job_id in job_ids:
        assert http.get(f"{api_url}/jobs/{job_id}?wait=30", timeout=40).json()["status"] == "succeeded"
    # A worker counts a job just after storing its result: allow the count a moment to catch up.
    deadline = time.monotonic() + 10
    while True:
        response = http.get(api_url + "/metrics", timeout=10)
        assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/plain")
        after = samples(response.text)
        done = after["inferq_jobs_completed_total"] - before["inferq_jobs_completed_total"]
        if done >= 3 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    # gunicorn runs two processes: whichever answered, it reads the same counters from Redis.
    assert after["inferq_jobs_submitted_total"] - before["inferq_jobs_submitted_total"] == 3
    assert after["inferq_jobs_completed_total"] - before["inferq_jobs_completed_total"] >= 3
    assert after["inferq_job_latency_seconds_count"] - before["inferq_job_latency_seconds_count"] >= 3
    assert after["inferq_queue_depth"] >= 0 and after["inferq_workers_ready"] >= 1
    for _ in range(4):  # several scrapes, likely both gunicorn processes: the same numbers
        again = samples(http.get(api_url + "/metrics", timeout=10).text)
        assert again["inferq_jobs_submitted_total"] == after["inferq_jobs_submitted_total"]
