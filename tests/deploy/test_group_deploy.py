"""The first `fab deploy` of a cluster with a worker group waits for the group's minimum hosts before its smoke job
(issue 22): their workers join by themselves only after the deploy has published the image, so a smoke job sent
at once could find no worker and roll a good orchestrator back.

What the deploy asks: the group's MinSize (moto) times the containers per host, and the orchestrator's ping check
(deploy/remote.py) waiting until that many workers answer, against a real Redis and a real Celery worker. The
whole first deploy of a group cluster is not run here (the lab has no Auto Scaling to launch hosts)."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import boto3
import pytest
import requests

from inferq.deploy import operations
from inferq.deploy.inventory import Host, Inventory
from inferq.stack import processes
from inferq.stack.redis_server import RedisServer
from tests.conftest import HEARTBEAT_SECONDS, start_workers
from tests.deploy.conftest import NEWEST_UBUNTU, ROOT


def test_the_deploy_wants_the_groups_minimum_hosts_workers(moto_endpoint, aws_env, monkeypatch):
    requests.post(moto_endpoint + "/moto-api/reset", timeout=5).raise_for_status()
    for name, value in aws_env.items():
        monkeypatch.setenv(name, value)
    boto3.client("ec2", region_name="us-east-1").create_launch_template(
        LaunchTemplateName="c22-workers", LaunchTemplateData={"ImageId": NEWEST_UBUNTU, "InstanceType": "c6i.large"})
    boto3.client("autoscaling", region_name="us-east-1").create_auto_scaling_group(
        AutoScalingGroupName="c22-workers", MinSize=2, MaxSize=20, DesiredCapacity=5,
        LaunchTemplate={"LaunchTemplateName": "c22-workers", "Version": "$Default"}, AvailabilityZones=["us-east-1a"])
    hosts = [Host("orchestrator", "orchestrator", "198.51.100.1", "10.0.0.5")]
    group = {"group": "c22-workers", "hook": "c22-drain", "bucket": "b", "region": "us-east-1"}
    assert operations.group_workers_wanted(Inventory(cluster="c22", key_file="k", hosts=hosts, autoscaling=group)) == 4
    assert operations.group_workers_wanted(Inventory(cluster="c22", key_file="k", hosts=hosts)) == 0


def ping(env: dict[str, str], *args: str) -> tuple[int, dict, float]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "inferq.deploy.remote", "ping", *args], capture_output=True,
                          text=True, timeout=60, env=env, cwd=ROOT)
    return done.returncode, json.loads(done.stdout.strip().splitlines()[-1]), time.monotonic() - started


@pytest.mark.slow
def test_the_ping_check_waits_for_enough_workers_and_says_how_many_lack(tmp_path, tiny_model):
    import os

    redis_server = RedisServer(tmp_path / "redis", appendonly=False).start()
    env = {**os.environ, "REDIS_URL": redis_server.url, "INFERQ_MODEL": str(tiny_model),
           "INFERQ_HEARTBEAT_SECONDS": HEARTBEAT_SECONDS}
    (worker,) = start_workers(env, ["joined"], redis_server.client(), tmp_path / "workers")
    try:
        code, answer, took = ping(env, "--timeout", "3", "--at-least", "2")
        assert code == 1 and answer["short"] == 1 and len(answer["online"]) == 1 and took >= 3, answer
        code, answer, _ = ping(env, "--timeout", "30", "--at-least", "1")
        assert code == 0 and answer["short"] == 0 and answer["missing"] == [], answer
    finally:
        processes.stop(worker)
        redis_server.stop()
