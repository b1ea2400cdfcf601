"""inferq-stack --ha: the primary SIGKILLed, the Sentinels promote the replica, the stack carries on without a restart
of anything but the killed node, which comes back as the new primary's replica."""
from __future__ import annotations

import os
import re
import signal
import time

import pytest
import redis
import requests

from inferq.stack.flower_auth import credentials_path
from tests.figures import record
from tests.stack.conftest import stack_env
from tests.stack.running import RunningStack

pytestmark = pytest.mark.slow


def node_client(state, name: str) -> redis.Redis:
    """A client of one data node, from its private config (which Redis may have rewritten: values quoted)."""
    conf = dict(line.split(" ", 1) for line in (state / "redis-ha" / name / "redis.conf").read_text().splitlines()
                if " " in line)
    return redis.Redis(host="127.0.0.1", port=int(conf["port"]), password=conf["requirepass"].strip('"'),
                       socket_timeout=2, socket_connect_timeout=2)


def test_ha_stack_fails_over_when_the_primary_is_killed(tiny_model, state_dir, tmp_path):
    env = {**stack_env(tiny_model, state_dir), "WORKERS": "1", "INFERQ_SENTINEL_DOWN_AFTER_SECONDS": "1.5",
           "INFERQ_SENTINEL_FAILOVER_TIMEOUT_SECONDS": "3"}
    stack = RunningStack(env, state_dir, tmp_path / "stack.log", args=("--ha",)).start()
    try:
        assert re.search(r"Sentinels on 127\.0\.0\.1:\d+,127\.0\.0\.1:\d+,127\.0\.0\.1:\d+", stack.output())
        with requests.Session() as http:
            assert http.post(stack.api + "/jobs?wait=20", json={"text": "before"}, timeout=30).json()["status"] \
                == "succeeded"
            primary = node_client(state_dir, "redis-a")
            assert primary.info("replication")["role"] == "master"
            pid = int(primary.info("server")["process_id"])
            os.kill(pid, signal.SIGKILL)
            killed_at = time.monotonic()
            answers: dict[int, int] = {}
            succeeded_after = None
            while time.monotonic() - killed_at < 60:
                response = http.post(stack.api + "/jobs?wait=10", json={"text": "after"}, timeout=20)
                answers[response.status_code] = answers.get(response.status_code, 0) + 1
                if response.status_code == 200 and response.json()["status"] == "succeeded":
                    succeeded_after = time.monotonic() - killed_at
                    break
                time.sleep(0.2)
        record("inferq-stack --ha, primary SIGKILLed", job_succeeded_after_s=succeeded_after,
               answers=",".join(f"{k}:{v}" for k, v in sorted(answers.items())))
        assert succeeded_after is not None, answers
        assert set(answers) <= {200, 202, 503}, answers  # 503 while there is no primary or no replica, never 500
        stack.wait_for("+switch-master", 10)
        stack.wait_for("starting as its replica", 10)
        assert node_client(state_dir, "redis-a").info("replication")["role"] == "slave"
        assert node_client(state_dir, "redis-b").info("replication")["role"] == "master"
        user, password = credentials_path(state_dir).read_text().strip().split(":", 1)
        assert requests.get(stack.flower + "/workers", auth=(user, password), timeout=10).status_code == 200
        assert stack.interrupt() == 0
    finally:
        stack.kill_all()
