"""The scaling signal: backlog per online worker and the oldest job's age, read from a real Redis holding jobs the
real API queued, and published by the real command to CloudWatch in moto's server."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest

from inferq import contract
from inferq.deploy import backlog
from inferq.stack.redis_server import RedisServer


@pytest.fixture()
def queue_redis(tmp_path):
    server = RedisServer(tmp_path, appendonly=False).start()
    yield server
    server.stop()


def queue_jobs(url: str) -> list[float]:
    """Jobs through the API's own POST /jobs (no worker runs, so they stay queued): 3 single texts (interactive),
    bulk jobs of 5 and 7 texts and one low-priority single text (bulk). Their queued_at, in order."""
    from inferq.api import create_app
    from inferq.settings.parser import load
    from inferq.settings.processes import Api

    app = create_app(load(Api, {"REDIS_URL": url, "INFERQ_QUEUE": "q", "INFERQ_MAX_TEXTS": "16"}))
    client, stamps = app.test_client(), []
    for body in ({"text": "one"}, {"texts": [f"t{i}" for i in range(5)]}, {"text": "two"},
                 {"texts": [f"u{i}" for i in range(7)]}, {"text": "low", "priority": "low"}, {"text": "three"}):
        before = time.time()
        answer = client.post("/jobs", json=body)
        assert answer.status_code == 202, answer.get_json()
        stamps.append(before)
        time.sleep(0.01)
    return stamps


def beat(client, fresh: int, stale: int) -> None:
    now = time.time()
    client.zadd(contract.WORKERS_KEY, {**{f"w{i}@host-a": now for i in range(fresh)},
                                       **{f"gone{i}@host-b": now - 600 for i in range(stale)}})


def test_backlog_counts_texts_per_online_worker_and_the_oldest_age(queue_redis):
    stamps = queue_jobs(queue_redis.url)
    client = queue_redis.client()
    beat(client, fresh=2, stale=3)
    time.sleep(0.2)
    now = time.time()
    reading = backlog.read(client, "q", now, backlog.fresh_after(now, 2.0))
    assert reading.lane_texts == {"interactive": 3, "bulk": 13}
    assert reading.lane_jobs == {"interactive": 3, "bulk": 3}
    assert reading.online_workers == 2 and reading.queued_texts == 16 and reading.per_worker == 8.0
    # The oldest queued job is the first one submitted (interactive); its age from its message's queued_at.
    assert now - stamps[0] - 0.05 <= reading.oldest_age_s <= now - stamps[0] + 0.05
    assert not reading.estimated
    # A sample smaller than a lane: its texts are its length times the sample's mean (bulk: 5 and 7 -> 6 a job).
    sampled = backlog.read(client, "q", now, backlog.fresh_after(now, 2.0), sample=2)
    assert sampled.estimated and sampled.lane_texts == {"interactive": 3, "bulk": 18}
    # No worker online: the whole backlog counts against one worker, so the group scales out.
    client.delete(contract.WORKERS_KEY)
    alone = backlog.read(client, "q", now, backlog.fresh_after(now, 2.0))
    assert alone.online_workers == 0 and alone.per_worker == 16.0
    # An empty queue: nothing waits, no age.
    client.delete("q", "q.bulk")
    empty = backlog.read(client, "q", now, backlog.fresh_after(now, 2.0))
    assert (empty.queued_texts, empty.oldest_age_s, empty.per_worker) == (0, 0.0, 0.0)


def test_target_backlog_is_speed_times_the_wait():
    assert backlog.target_backlog(60) == round(backlog.TEXTS_PER_SECOND_PER_WORKER * 60, 1)
    assert backlog.target_backlog(10, texts_per_second=100.0) == 1000.0
    with pytest.raises(ValueError):
        backlog.target_backlog(0)


def publisher(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "inferq.deploy.backlog", *args], env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_publisher_puts_the_cluster_metrics_to_cloudwatch(queue_redis, aws_env, tmp_path):
    import boto3

    stamps = queue_jobs(queue_redis.url)
    beat(queue_redis.client(), fresh=4, stale=0)
    env = {**aws_env, "REDIS_URL": queue_redis.url, "INFERQ_QUEUE": "q", "INFERQ_HEARTBEAT_SECONDS": "30"}
    once = publisher(["--once", "--cluster", "c22"], env)
    out, err = once.communicate(timeout=60)
    assert once.returncode == 0, err
    assert '"backlog_per_worker": 4.0' in out and '"queued_texts": 16' in out
    # A loop publishes every --interval seconds until stopped.
    log = tmp_path / "publisher.log"
    with open(log, "w") as out_file:
        loop = subprocess.Popen([sys.executable, "-m", "inferq.deploy.backlog", "--cluster", "c22", "--interval",
                                 "1"], env={**os.environ, **env}, stdout=out_file, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 60
        while log.read_text().count("backlog_per_worker") < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        loop.terminate()
        loop.wait(timeout=30)
    out = log.read_text()
    assert out.count("backlog_per_worker") >= 3, out
    cloudwatch = boto3.client("cloudwatch", region_name="us-east-1", endpoint_url=aws_env["AWS_ENDPOINT_URL"],
                              aws_access_key_id="testing", aws_secret_access_key="testing")
    listed = cloudwatch.list_metrics(Namespace="inferq", Dimensions=[{"Name": "Cluster", "Value": "c22"}])["Metrics"]
    assert {m["MetricName"] for m in listed} == {"BacklogPerWorker", "QueuedTexts", "OnlineWorkers",
                                                 "OldestJobAgeSeconds"}

    now = datetime.now(UTC)
    stats = cloudwatch.get_metric_statistics(
        Namespace="inferq", MetricName="BacklogPerWorker", Dimensions=[{"Name": "Cluster", "Value": "c22"}],
        StartTime=now - timedelta(minutes=5), EndTime=now + timedelta(minutes=1), Period=60,
        Statistics=["Maximum", "SampleCount"])["Datapoints"]
    assert sum(d["SampleCount"] for d in stats) >= 4 and max(d["Maximum"] for d in stats) == 4.0
    ages = cloudwatch.get_metric_statistics(
        Namespace="inferq", MetricName="OldestJobAgeSeconds", Dimensions=[{"Name": "Cluster", "Value": "c22"}],
        StartTime=now - timedelta(minutes=5), EndTime=now + timedelta(minutes=1), Period=60,
        Statistics=["Maximum"])["Datapoints"]
    # The loop's readings came at least two intervals after the --once one, which came after the jobs were queued:
    # the oldest age grew past 2 s, and no reading can be older than the oldest job is now.
    assert 2.0 <= max(d["Maximum"] for d in ages) <= time.time() - stamps[0]
    # Slower than one datapoint a minute is refused before anything is read.
    slow = publisher(["--interval", "120"], env)
    _, err = slow.communicate(timeout=30)
    assert slow.returncode == 2 and "--interval must be within" in err


def test_the_orchestrator_runs_the_publisher_only_for_a_cluster_with_a_group(tmp_path):
    """fab deploy's orchestrator services: with inventory.autoscaling (written by `up --min/--max-workers`), a unit
    inferq-backlog-metrics on the orchestrator's env file, and the release installed with boto3; without, as before."""
    import dataclasses
    import shutil

    from inferq.deploy import release
    from inferq.deploy.layout import Layout
    from inferq.deploy.orchestrator import orchestrator_services
    from inferq.deploy.runtime import Runtime
    from tests.deploy.test_config_files import lab_inventory

    fixed = lab_inventory()
    grouped = dataclasses.replace(fixed, autoscaling={"group": "c-workers", "hook": "c-drain", "bucket": "b",
                                                      "region": "eu-west-1"})
    where = Layout(str(tmp_path), sys.prefix, str(tmp_path))
    assert "backlog-metrics" not in [s.name for s in orchestrator_services(Runtime(), fixed, fixed.orchestrator,
                                                                          where)]
    services = {s.name: s for s in orchestrator_services(Runtime(), grouped, grouped.orchestrator, where)}
    unit = services["backlog-metrics"].unit()
    assert f"ExecStart={sys.prefix}/bin/inferq-backlog-metrics --cluster c --region eu-west-1" in unit
    assert f"EnvironmentFile={tmp_path}/etc/orchestrator.env" in unit and "User=inferq" in unit
    assert release.GROUP_EXTRAS == "api,flower,autoscale"
    analyze = shutil.which("systemd-analyze")
    if analyze:
        (tmp_path / "etc").mkdir()
        (tmp_path / "etc" / "orchestrator.env").write_text("")
        path = tmp_path / "inferq-backlog-metrics.service"
        path.write_text(unit)
        checked = subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True, timeout=60)
        assert checked.returncode == 0 and checked.stderr == "", checked.stderr
