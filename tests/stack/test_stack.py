"""The whole stack as `make run` starts it: jobs through the CLI and HTTP, then Ctrl-C leaves nothing behind."""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import requests

from inferq.stack.flower_auth import credentials_path
from inferq.stack.processes import BIN
from inferq.stack.readiness import READY_LINE
from tests.stack.conftest import stack_env
from tests.stack.running import alive, command_lines

pytestmark = pytest.mark.slow


def wait_for_line(process: subprocess.Popen, log: Path, line: str, timeout: float) -> str:
    """Wait until the stack's output contains line; fail with the output if it exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if line in text:
            return text
        if process.poll() is not None:
            pytest.fail(f"inferq-stack exited with {process.returncode}:\n{text[-4000:]}")
        time.sleep(0.2)
    pytest.fail(f"no {line!r} within {timeout}s:\n{log.read_text(errors='replace')[-4000:]}")


def cli(env: dict, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run the inferq console script."""
    return subprocess.run([str(BIN / "inferq"), *args], env=env, capture_output=True, text=True, timeout=timeout)


def metric(text: str, name: str) -> float:
    """One sample's value from Prometheus text."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} missing from /metrics:\n{text}")


def test_stack_serves_cli_and_http_then_stops_everything(tiny_model, state_dir, tmp_path):
    env = stack_env(tiny_model, state_dir)
    api, flower = env["INFERQ_API_URL"], "http://" + env["INFERQ_FLOWER_BIND"]
    log = tmp_path / "stack.log"
    with open(log, "wb") as out:
        stack = subprocess.Popen([str(BIN / "inferq-stack")], env=env, stdout=out, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
    pids: list[int] = []
    try:
        output = wait_for_line(stack, log, READY_LINE, 150)
        # Every process of the stack descends from inferq-stack (supervisord, then the services).
        pids = [p.pid for p in psutil.Process(stack.pid).children(recursive=True)]
        commands = " ".join(command_lines(pids).values())
        for part in ("redis-server", "gunicorn", "inferq-worker", "flower"):
            assert part in commands, f"{part} not running: {commands}"
        assert "(2/2)" in output and api in output and flower in output

        # The CLI: one text waited for, a file of texts, status and result of a job.
        one = cli(env, "submit", "what a lovely day", "--wait", "30")
        assert one.returncode == 0, one.stderr
        body = json.loads(one.stdout)
        assert body["status"] == "succeeded" and body["results"][0]["label"] in ("NEGATIVE", "POSITIVE")
        texts = tmp_path / "texts.txt"
        texts.write_text("first text\n\nsecond one\nthird and last\n")
        results = tmp_path / "results.jsonl"
        many = cli(env, "submit-file", str(texts), "-o", str(results))
        assert many.returncode == 0, many.stderr
        lines = [json.loads(line) for line in results.read_text().splitlines()]
        assert [(r["line"], r["text"], r["status"]) for r in lines] == [
            (1, "first text", "succeeded"), (3, "second one", "succeeded"), (4, "third and last", "succeeded")]
        assert "3 texts in 1 job: 3 succeeded" in many.stderr
        status = cli(env, "status", body["job_id"])
        assert status.returncode == 0 and status.stdout.split() == [body["job_id"], "succeeded"]
        result = cli(env, "result", lines[0]["job_id"], "--wait", "5")
        assert result.returncode == 0 and json.loads(result.stdout)["status"] == "succeeded"

        # Plain HTTP, as curl would: the JSON route and the seed's route.
        job = requests.post(api + "/jobs", json={"text": "through http"}, timeout=10)
        assert job.status_code == 202
        seed = requests.post(api + "/new_request", data={"text": "the seed's form"}, timeout=10)
        assert seed.status_code == 200
        for job_id in (job.json()["job_id"], seed.json()["job_id"]):
            assert requests.get(f"{api}/jobs/{job_id}?wait=30", timeout=40).json()["status"] == "succeeded"

        # /metrics of the API (4 jobs so far: the file's three lines were one bulk job) and of
        # Flower. A worker counts a job just after storing its result, so the last count may lag
        # the last result by a moment.
        jobs = 4
        deadline = time.monotonic() + 10
        while True:
            text = requests.get(api + "/metrics", timeout=10).text
            if metric(text, "inferq_jobs_completed_total") >= jobs or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert metric(text, "inferq_jobs_submitted_total") == jobs
        assert metric(text, "inferq_jobs_completed_total") == jobs
        assert metric(text, "inferq_jobs_failed_total") == 0
        assert metric(text, "inferq_queue_depth") == 0
        assert metric(text, "inferq_workers_ready") >= 1  # 2, unless a heartbeat was late on a busy machine
        assert metric(text, "inferq_job_latency_seconds_count") == jobs
        assert metric(text, 'inferq_job_latency_seconds_bucket{le="+Inf"}') == jobs
        assert "flower_events_total" in requests.get(flower + "/metrics", timeout=10).text

        # Flower needs the generated credentials; the file is private and the password never printed.
        creds = credentials_path(state_dir)
        assert stat.S_IMODE(os.stat(creds).st_mode) == 0o600
        user, password = creds.read_text().strip().split(":", 1)
        assert requests.get(flower + "/workers", timeout=10).status_code == 401
        assert requests.get(flower + "/workers", auth=(user, password), timeout=10).status_code == 200
        assert password not in log.read_text(errors="replace")
    finally:
        if stack.poll() is None:
            stack.send_signal(signal.SIGINT)  # what Ctrl-C sends
        try:
            code = stack.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(stack.pid, signal.SIGKILL)
            raise
    assert code == 0, log.read_text(errors="replace")[-3000:]
    time.sleep(0.5)
    assert alive(pids) == [], "processes of the stack left running"
    # Redis kept its data with AOF under the state directory.
    assert list((state_dir / "redis").glob("appendonly*")), "no AOF files under the state dir"


def run_to_exit(env: dict, timeout: float = 240) -> tuple[int, str, set[int]]:
    """Run inferq-stack until it exits by itself: its exit status, its output and every process it started."""
    stack = subprocess.Popen([str(BIN / "inferq-stack")], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    pids: set[int] = set()
    deadline = time.monotonic() + timeout
    while stack.poll() is None and time.monotonic() < deadline:
        try:
            pids |= {p.pid for p in psutil.Process(stack.pid).children(recursive=True)}
        except psutil.NoSuchProcess:
            break
        time.sleep(0.2)
    try:
        output = stack.communicate(timeout=30)[0].decode(errors="replace")
    except subprocess.TimeoutExpired:
        os.killpg(stack.pid, signal.SIGKILL)
        raise
    return stack.returncode, output, pids


def given_up(output: str, name: str, cause: str) -> str:
    """The stack's one line giving the service up, checked against the retries that came before it."""
    from inferq.stack.supervisor_config import START_RETRIES

    # Tried, started again after 1, 2 and 4 s, then given up: each start's death logged with its cause.
    assert output.count(f"exited: {name} ({cause}; not expected)") == START_RETRIES + 1, output[-3000:]
    assert [line.split("starting it again in ")[1].split("s:")[0] for line in output.splitlines()
            if line.split("| ", 1)[-1].startswith(f"{name} died ")] == ["1", "2", "4"], output[-3000:]
    [give_up] = [line for line in output.splitlines() if "giving up:" in line]
    assert f"giving up: {name} died {START_RETRIES + 1} times in a row" in give_up
    assert f"(last: {cause}) and never started since the stack did; stopping the stack" in give_up
    return give_up


def test_a_service_that_keeps_dying_at_start_is_given_up_and_stops_the_stack(tiny_model, state_dir, tmp_path):
    import socket

    env = stack_env(tiny_model, state_dir)
    with socket.socket() as taken:  # the API's port is busy: gunicorn cannot bind and exits, at every start
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env["INFERQ_API_BIND"] = f"127.0.0.1:{taken.getsockname()[1]}"
        code, output, pids = run_to_exit(env)
    assert code == 1, output[-3000:]
    assert READY_LINE not in output
    assert "Can't connect to" in given_up(output, "api", "exit status 1")
    # Then everything else stopped, Redis last.
    stopped = [line.split("stopped: ", 1)[1].split(" ")[0] for line in output.splitlines() if "INFO stopped: " in line]
    assert sorted(stopped) == ["flower", "redis", "worker.1", "worker.2"] and stopped[-1] == "redis", stopped
    time.sleep(0.5)
    assert alive(sorted(pids)) == [], "processes of the stack left running"


def test_a_worker_whose_model_cannot_load_stops_the_stack_with_one_line(tiny_model, state_dir, tmp_path):
    not_a_model = tmp_path / "not-a-model"
    not_a_model.mkdir()
    (not_a_model / "README").write_text("a directory without a model\n")
    env = {**stack_env(tiny_model, state_dir), "WORKERS": "1", "INFERQ_MODEL": str(not_a_model)}
    code, output, pids = run_to_exit(env)
    assert code == 1, output[-3000:]
    assert READY_LINE not in output
    # The worker exits 3 when its model cannot load; its last line says why.
    assert str(not_a_model) in given_up(output, "worker.1", "exit status 3")
    time.sleep(0.5)
    assert alive(sorted(pids)) == [], "processes of the stack left running"


def test_redis_url_points_the_stack_at_an_existing_redis(tiny_model, state_dir, tmp_path, redis_server):
    env = {**stack_env(tiny_model, state_dir), "REDIS_URL": redis_server.url, "WORKERS": "1"}
    log = tmp_path / "stack.log"
    with open(log, "wb") as out:
        stack = subprocess.Popen([str(BIN / "inferq-stack")], env=env, stdout=out, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        output = wait_for_line(stack, log, READY_LINE, 150)
        commands = list(command_lines(p.pid for p in psutil.Process(stack.pid).children(recursive=True)).values())
        assert not any("redis-server" in c for c in commands), commands
        assert "Redis: external (REDIS_URL)" in output and "(1/1)" in output
        assert redis_server.password not in output
        run = cli(env, "submit", "through an existing redis", "--wait", "30")
        assert run.returncode == 0 and json.loads(run.stdout)["status"] == "succeeded", run.stderr
    finally:
        if stack.poll() is None:
            stack.send_signal(signal.SIGINT)
        code = stack.wait(timeout=60)
    assert code == 0
    assert redis_server.client().ping()  # the stack leaves a Redis it did not start running
