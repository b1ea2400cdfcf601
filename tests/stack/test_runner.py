"""inferq-stack's plan, without starting anything: the Procfile's processes, their environment, the state lock."""
from __future__ import annotations

import socket
from dataclasses import replace

import pytest

from inferq.settings import Stack, load
from inferq.stack import runner


def plan(env: dict, tmp_path, redis_env: dict | None = None):
    settings = replace(load(Stack, env), state_dir=str(tmp_path))
    manager, workers = runner.build_manager(settings, "offline:tiny", "redis://:pw@127.0.0.1:1/0",
                                            {"INFERQ_REDIS_SERVER": "redis-server", "INFERQ_REDIS_CONF": "x"}
                                            if redis_env is None else redis_env,
                                            ("inferq", "s3cret-pass"), runner.PROCFILE)
    return {name: entry["obj"] for name, entry in manager._processes.items()}, workers


def test_workers_setting_starts_that_many_named_workers(tmp_path):
    processes, workers = plan({"WORKERS": "10"}, tmp_path)
    assert sorted(processes) == sorted(["redis.1", "api.1", "flower.1", *(f"worker.{i}" for i in range(1, 11))])
    assert workers == [f"w{i}@{socket.gethostname()}" for i in range(1, 11)]
    assert 'w${HONCHO_PROCESS_NAME#worker.}@%h' in processes["worker.3"].cmd
    assert processes["worker.3"].env["HONCHO_PROCESS_NAME"] == "worker.3"


def test_flower_password_goes_to_flower_only_and_never_on_a_command_line(tmp_path):
    processes, _ = plan({"WORKERS": "2", "INFERQ_FLOWER_BIND": "127.0.0.1:5999"}, tmp_path)
    flower = processes["flower.1"]
    assert flower.env["FLOWER_BASIC_AUTH"] == "inferq:s3cret-pass" and flower.env["FLOWER_PORT"] == "5999"
    for name, process in processes.items():
        assert "s3cret-pass" not in process.cmd
        if name != "flower.1":
            assert "FLOWER_BASIC_AUTH" not in process.env
        assert process.env["REDIS_URL"] == "redis://:pw@127.0.0.1:1/0"
        assert process.env["INFERQ_MODEL"] == "offline:tiny"


def test_external_redis_starts_no_redis(tmp_path):
    processes, _ = plan({"WORKERS": "1"}, tmp_path, redis_env={})
    assert "redis.1" not in processes


def test_one_state_dir_one_stack(tmp_path):
    held = runner.lock_state(tmp_path)
    try:
        with pytest.raises(SystemExit, match="in use by a running stack"):
            runner.lock_state(tmp_path)
    finally:
        held.close()
    runner.lock_state(tmp_path).close()  # free again once the holder is gone


def test_settings_of_the_stack():
    settings = load(Stack, {"INFERQ_API_BIND": "0.0.0.0:8000", "REDIS_URL": "redis://h:1/0"})
    assert settings.url == "http://127.0.0.1:8000" and settings.external_redis
    assert not load(Stack, {}).external_redis
    assert load(Stack, {"HF_HUB_OFFLINE": "1"}).hub_offline and not load(Stack, {}).hub_offline
    assert load(Stack, {"INFERQ_API_URL": "http://api:5000/"}).url == "http://api:5000"
