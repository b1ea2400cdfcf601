"""inferq-stack's plan and supervisord configuration, without starting anything; the state lock; the log stream."""
from __future__ import annotations

import configparser
import io
import shlex
import socket
import stat
from dataclasses import replace

import pytest

from inferq.settings import Stack, load
from inferq.stack import runner, supervision
from inferq.stack.log_tail import LogTail, Printer, last_line
from inferq.stack.supervisor_config import REDIS_PRIORITY, SERVICES_GROUP, SERVICES_PRIORITY, render

REDIS_COMMAND = ["/usr/bin/redis-server", "/state/redis/redis.conf"]


def plan(env: dict, tmp_path, redis_command: list[str] | None = None):
    settings = replace(load(Stack, env), state_dir=str(tmp_path))
    command = REDIS_COMMAND if redis_command is None else redis_command
    return runner.build_plan(settings, tmp_path, {"redis": command} if command else {},
                             ("inferq", "s3cret-pass"), tmp_path / "rpc")


def config(plan_) -> configparser.RawConfigParser:
    parsed = configparser.RawConfigParser()
    parsed.read_string(render(plan_))
    return parsed


def test_workers_setting_starts_that_many_named_workers(tmp_path):
    p, workers = plan({"WORKERS": "10"}, tmp_path)
    assert p.process_names() == ["redis", "api", "flower", *(f"worker.{i}" for i in range(1, 11))]
    assert workers == [f"w{i}@{socket.gethostname()}" for i in range(1, 11)]
    worker = config(p)["program:worker"]
    assert worker["numprocs"] == "10" and worker["numprocs_start"] == "1"
    assert worker["process_name"] == "worker.%(process_num)d"
    # supervisord gives each numbered process its number: worker.N runs as wN@<its host>, and
    # Celery's %h reaches the worker as written (supervisord reads %% as %).
    program, node = shlex.split(worker["command"])
    assert program.endswith("/inferq-worker") and node == "--hostname=w%(process_num)d@%%h"


def test_every_service_is_restarted_and_each_failed_start_handed_to_the_stack(tmp_path):
    p, _ = plan({"WORKERS": "2"}, tmp_path)
    parsed = config(p)
    for name in ("redis", "api", "worker", "flower"):
        program = parsed[f"program:{name}"]
        # startretries 0: supervisord never retries a failed start itself (FATAL at once); the stack does.
        assert program["autorestart"] == "true" and program["startretries"] == "0"
        assert int(program["startsecs"]) >= 2
        assert program["stopasgroup"] == program["killasgroup"] == "true"
        assert "/bin/sh" not in program["command"]  # no shell between supervisord and the service
    # Redis starts first and stops last: alone in the lowest priority; the rest in one group above it.
    assert parsed["program:redis"]["priority"] == str(REDIS_PRIORITY)
    group = parsed[f"group:{SERVICES_GROUP}"]
    assert group["programs"].split(",") == ["api", "worker", "flower"] and group["priority"] == str(SERVICES_PRIORITY)
    assert REDIS_PRIORITY < SERVICES_PRIORITY


def test_flower_password_goes_to_flower_only_and_never_on_a_command_line(tmp_path):
    p, _ = plan({"WORKERS": "2", "INFERQ_FLOWER_BIND": "127.0.0.1:5999"}, tmp_path)
    parsed = config(p)
    flower = parsed["program:flower"]["environment"]
    assert 'FLOWER_BASIC_AUTH="inferq:s3cret-pass"' in flower and 'FLOWER_PORT="5999"' in flower
    for section in parsed.sections():
        if section.startswith("program:"):
            assert "s3cret-pass" not in parsed[section]["command"]
            if section != "program:flower":
                assert "environment" not in parsed[section]


def test_config_file_is_private(tmp_path):
    path = supervision.private_file(tmp_path / "supervisor" / "supervisord.conf", render(plan({}, tmp_path)[0]))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_external_redis_starts_no_redis(tmp_path):
    p, _ = plan({"WORKERS": "1"}, tmp_path, redis_command=[])
    assert "redis" not in p.process_names()
    assert "program:redis" not in config(p).sections()


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
    assert settings.client.url == "http://127.0.0.1:8000" and settings.external_redis
    assert not load(Stack, {}).external_redis
    assert load(Stack, {"HF_HUB_OFFLINE": "1"}).hub_offline and not load(Stack, {}).hub_offline
    assert load(Stack, {"INFERQ_API_URL": "http://api:5000/"}).client.url == "http://api:5000"


def test_log_tail_prints_whole_lines_under_their_service_across_rotation(tmp_path):
    out = io.StringIO()
    tail = LogTail(tmp_path, Printer(out, width=11))
    api = tmp_path / "api.log"
    api.write_text("first line\nhalf of a li")
    (tmp_path / "supervisord.log").write_text("2026-11-28 05:20:18,123 WARN exited: worker.1 (terminated by "
                                              "SIGKILL; not expected)\n")
    tail.poll()
    with open(api, "a") as f:
        f.write("ne\n")
    tail.poll()
    api.rename(tmp_path / "api.log.1")  # what supervisord's rotation does
    api.write_text("after rotation\n")
    tail.poll(final=True)
    lines = [line.split(" ", 1)[1] for line in out.getvalue().splitlines()]
    assert lines == [
        "api         | first line",
        "supervisord | WARN exited: worker.1 (terminated by SIGKILL; not expected)",
        "api         | half of a line",
        "api         | after rotation",
    ]
    assert last_line(tmp_path / "api.log") == "after rotation"


def test_give_up_line_says_which_service_why_and_where(tmp_path):
    (tmp_path / "supervisord.log").write_text(
        "2026-11-28 05:20:18,123 WARN exited: api (exit status 1; not expected)\n"
        "2026-11-28 05:20:19,123 INFO gave up: api entered FATAL state, too many start retries too quickly\n")
    (tmp_path / "api.log").write_text("[ERROR] Connection in use: ('127.0.0.1', 5000)\n"
                                      "[ERROR] Can't connect to ('127.0.0.1', 5000)\n")
    line = supervision.give_up_line({"name": "api", "exitstatus": 0, "spawnerr": "Exited too quickly"}, tmp_path)
    assert "\n" not in line
    assert line.startswith("giving up: api died 4 times in a row within 15s of starting (last: exit status 1) "
                           "and never started since the stack did; stopping the stack.")
    assert "Can't connect to ('127.0.0.1', 5000)" in line and str(tmp_path / "api.log") in line


def test_ha_runs_a_primary_a_replica_and_three_sentinels_before_the_services(tmp_path):
    settings = replace(load(Stack, {"WORKERS": "1"}), state_dir=str(tmp_path))
    redis_env, programs = runner.redis_setup(settings, tmp_path, ha=True)
    assert list(programs) == ["redis", "redis-replica", "sentinel-1", "sentinel-2", "sentinel-3"]
    assert len(redis_env["INFERQ_REDIS_SENTINELS"].split(",")) == 3 and redis_env["REDIS_URL"].startswith("redis://:")
    p, _ = runner.build_plan(settings, tmp_path, programs, ("inferq", "s3cret-pass"), tmp_path / "rpc")
    parsed = config(p)
    for name in programs:
        assert parsed[f"program:{name}"]["priority"] == str(REDIS_PRIORITY)
        password = redis_env["REDIS_URL"].split("@")[0].rsplit(":", 1)[1]
        assert password not in parsed[f"program:{name}"]["command"]  # in the config files (mode 600) only
    assert parsed[f"group:{SERVICES_GROUP}"]["programs"].split(",") == ["api", "worker", "flower"]
    assert programs["sentinel-1"][-1] == "--sentinel"
    replica_conf = (tmp_path / "redis-ha" / "redis-b" / "redis.conf").read_text()
    assert "replicaof 127.0.0.1 " in replica_conf and "masterauth " in replica_conf
