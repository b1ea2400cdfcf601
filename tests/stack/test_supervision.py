"""`make run` survives a crash: the real inferq-stack, its services SIGKILLed one by one, then Ctrl-C.

One stack for the module (tests run in order and leave it whole): two workers
on the tiny model, Redis with ``appendfsync always``, a short visibility
timeout (so a killed worker's job comes back within seconds, as in
tests/reliability) and test-only sleeping jobs (so a worker is busy when it is
killed). A worker is also killed again and again while it starts, as the OOM
killer would while it loads its model. The last test stops the stack with
Ctrl-C and checks that nothing is left.
"""
from __future__ import annotations

import os
import random
import re
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
import redis
import requests

from inferq.commands import local_worker_node
from inferq.contract import WORKERS_KEY
from inferq.stack.restarts import backoff_seconds
from inferq.stack.supervisor_config import START_RETRIES, START_SECONDS
from inferq.tasks.faults import SLEEP_PREFIX
from tests import holders
from tests.figures import record
from tests.reliability.load import Load, Outcome, one_submit
from tests.reliability.stack import FAULT_ENV, VISIBILITY_TIMEOUT
from tests.stack.conftest import stack_env
from tests.stack.running import RunningStack, alive

pytestmark = pytest.mark.slow

WORKERS_BACK_BOUND = 30.0
"""The issue's bound: /readyz counts every worker again within 30 s of one being killed."""

REDIS_BACK_BOUND = 10.0
"""The issue's bound: Redis answers again within 10 s of being killed."""

HEARTBEAT = 0.5
"""Workers' heartbeat (stack_env); /readyz forgets a worker after three missed beats."""

JOBS, KILL_AT = 300, 0.2
"""300 jobs, one worker SIGKILLed once 20% of them are done."""

JOB_SECONDS = 0.1
"""Each job sleeps this long (test fault injection): 300 of them keep two workers busy for 15 s."""

KILLS_WHILE_STARTING = 5
"""Failed starts in a row forced on one worker: more than the START_RETRIES + 1 after which the stack stopped."""

KILL_SEED = int(os.environ.get("INFERQ_TEST_SEED", "18"))
"""Seeds how long after each start the worker is killed (printed with the figures, to replay a run)."""

KILL_WITHIN_SECONDS = 2.0
"""Each kill comes at a random instant this soon after the start, or as soon as the worker's log says its model
is loaded if that comes first: before it is ready, which takes a tiny-model worker about 0.9 s here and a
base-model one several seconds."""

SUBMIT_EVERY_SECONDS = 0.2
"""Jobs submitted meanwhile, one per this many seconds: a steady trickle that leaves the cores to the restarts."""


@pytest.fixture(scope="module")
def stack(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("supervised")
    env = {**stack_env(tiny_model, root / "state"), **FAULT_ENV, "WORKERS": "2",
           "INFERQ_REDIS_APPENDFSYNC": "always", "INFERQ_HEARTBEAT_SECONDS": str(HEARTBEAT)}
    running = RunningStack(env, root / "state", root / "stack.log")
    try:
        yield running.start()
    finally:
        running.kill_all()


@dataclass
class ReadyProbe:
    """Ask /readyz every 0.1 s from a thread: (monotonic time, HTTP status or 0 for no answer, workers, missing)."""

    api: str
    samples: list[tuple[float, int, int, tuple[str, ...]]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> ReadyProbe:
        threading.Thread(target=self._run, daemon=True).start()
        return self

    def _run(self) -> None:
        with requests.Session() as http:
            while not self._stop.is_set():
                at = time.monotonic()
                try:
                    response = http.get(self.api + "/readyz", timeout=5)
                    body = response.json()
                    self.samples.append((at, response.status_code, body.get("workers", 0),
                                         tuple(body.get("missing", ()))))
                except (requests.RequestException, ValueError):
                    self.samples.append((at, 0, 0, ()))
                self._stop.wait(0.1)

    def stop(self) -> list[tuple[float, int, int, tuple[str, ...]]]:
        self._stop.set()
        time.sleep(0.2)
        return self.samples


@dataclass
class Trickle:
    """Submit one job every SUBMIT_EVERY_SECONDS from a thread, remembering each outcome."""

    api: str
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Trickle:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        with requests.Session() as http:
            while not self._stop.wait(SUBMIT_EVERY_SECONDS):
                text = f"submitted while a worker restarts {len(self.outcomes)}"
                self.outcomes.append(one_submit(http, self.api, text))

    def stop(self) -> list[Outcome]:
        self._stop.set()
        self._thread.join()
        return self.outcomes


def submit_all(api: str, texts: list[str]) -> list[tuple[int, str | None]]:
    """POST each text to /jobs from 8 threads; (status, job id) of each, 0 for no answer."""
    local = threading.local()

    def one(text):
        if not hasattr(local, "http"):
            local.http = requests.Session()
        try:
            response = local.http.post(api + "/jobs", json={"text": text}, timeout=10)
        except requests.RequestException:
            return 0, None
        return response.status_code, response.json().get("job_id")

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, texts))


def running_on(stack: RunningStack, job_ids: list[str], worker: str) -> list[str]:
    """Jobs that the named worker (prefix of its hostname) started and that have no result yet."""
    client = stack.redis()
    started = [j for j in job_ids if (holders.holder(client, j) or "").startswith(worker)]
    return [j for j, state in stack.statuses(started).items() if state == "PENDING"] if started else []


def restart_logged(output: str, name: str, cause: str, after: int = 0) -> bool:
    """supervisord logged the death with its cause, then spawned the service again."""
    died = output.find(f"exited: {name} ({cause}; not expected)", after)
    return died >= 0 and output.find(f"spawned: '{name}' with pid", died) >= 0


def test_sigkill_a_worker_at_20_percent_of_300_jobs(stack):
    probe = ReadyProbe(stack.api).start()
    mark = len(stack.output())
    answers = submit_all(stack.api, [f"{SLEEP_PREFIX}{JOB_SECONDS}"] * JOBS)
    ids = [job_id for status, job_id in answers if status == 202]
    while sum(s == "SUCCESS" for s in stack.statuses(ids).values()) < KILL_AT * JOBS:
        time.sleep(0.05)
    # Kill w1 while it runs a job (it is between two jobs only for moments): that job must not be lost.
    victim, in_flight = stack.service_pid(r"--hostname=w1@"), []
    deadline = time.monotonic() + 30
    while not in_flight and time.monotonic() < deadline:
        in_flight = running_on(stack, ids, "w1@")
    assert in_flight, "w1 never held a job to be killed"
    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)

    # Every worker counted again: w1 is a new process, and /readyz counts two after the
    # dead one's heartbeat has aged out (three beats), so the count is not the dead one's.
    back_s = None
    while back_s is None and time.monotonic() < killed_at + WORKERS_BACK_BOUND + 30:
        fresh = [s for s in probe.samples if s[0] >= killed_at + 3 * HEARTBEAT]
        if fresh and fresh[-1][2] == 2 and stack.find_service(r"--hostname=w1@") not in (None, victim):
            back_s = fresh[-1][0] - killed_at
        time.sleep(0.1)
    states = stack.wait_done(ids, timeout=VISIBILITY_TIMEOUT + 60)
    samples = probe.stop()
    client = stack.redis()
    deliveries = holders.deliveries(client, ids)
    after_kill = [s for s in samples if s[0] >= killed_at]
    rerun = [j for j in ids if deliveries[j] > 1]
    record("make run: SIGKILL a worker at 20% of 300 jobs", accepted=len(ids),
           succeeded=sum(s == "SUCCESS" for s in states.values()),
           lost=sum(s != "SUCCESS" for s in states.values()), killed_in_flight=len(in_flight),
           run_more_than_once=len(rerun),
           readyz_requests=len(samples), readyz_unanswered=sum(s[1] == 0 for s in samples),
           readyz_503=sum(s[1] == 503 for s in samples),
           readyz_fewest_workers_after_kill=min((s[2] for s in after_kill), default=None),
           workers_counted_again_s=back_s, bound_s=WORKERS_BACK_BOUND)
    assert [status for status, _ in answers] == [202] * JOBS
    assert all(s == "SUCCESS" for s in states.values()), states
    assert set(in_flight) <= set(rerun), "the killed worker's job was not run again"
    assert [s for s in samples if s[1] == 0] == [], "the API did not answer /readyz"
    assert back_s is not None and back_s <= WORKERS_BACK_BOUND
    assert restart_logged(stack.output(), "worker.1", "terminated by SIGKILL", mark), stack.output()[-3000:]


def test_sigkill_redis_under_load_restarts_it_from_its_aof(stack):
    client = stack.redis()
    assert client.config_get("appendfsync")["appendfsync"] == "always"
    mark = len(stack.output())
    load = Load(stack.api, threads=4, text="supervised aof").start()
    time.sleep(3.0)
    victim = stack.service_pid(r"redis-server")
    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    back_s = None
    while back_s is None and time.monotonic() < killed_at + REDIS_BACK_BOUND + 20:
        try:
            # Answered by the new redis-server, not by the killed one before it is gone.
            if stack.redis().info("server")["process_id"] != victim:
                back_s = time.monotonic() - killed_at
        except redis.RedisError:
            time.sleep(0.05)
    time.sleep(2.0)  # load goes on after the restart
    outcomes = load.stop()
    accepted = [o for o in outcomes if o.status == 202]
    states = stack.wait_done([o.job_id for o in accepted], timeout=VISIBILITY_TIMEOUT + 60)
    lost = [o for o in accepted if states[o.job_id] != "SUCCESS"]
    # Answered (accepted) at least a second before the kill: must survive whatever the fsync policy.
    settled = [o for o in accepted if o.sent + o.seconds <= killed_at - 1.0]
    record("make run: SIGKILL Redis under load, appendfsync always", accepted=len(accepted),
           accepted_1s_before_kill=len(settled), lost=len(lost), lost_of_those=sum(o in settled for o in lost),
           refused_503=sum(o.status == 503 for o in outcomes),
           errors_5xx_other=sum(o.status >= 500 and o.status != 503 for o in outcomes),
           no_answer=sum(o.status == 0 for o in outcomes), redis_back_s=back_s, bound_s=REDIS_BACK_BOUND)
    assert back_s is not None and back_s <= REDIS_BACK_BOUND
    assert settled and [o for o in lost if o in settled] == []
    assert lost == [], "appendfsync always: every accepted job must survive"
    assert all(o.status in (202, 503) for o in outcomes), sorted({o.status for o in outcomes})
    assert restart_logged(stack.output(), "redis", "terminated by SIGKILL", mark), stack.output()[-3000:]


def test_sigkill_api_and_flower_both_come_back(stack):
    mark = len(stack.output())
    times = {}
    for name, pattern, url in (("api", r"gunicorn", stack.api + "/healthz"),
                               ("flower", r"celery_app flower", stack.flower + "/healthcheck")):
        victim = stack.service_pid(pattern)
        # A killed gunicorn master leaves its workers, which answer until they notice (within a
        # second or so) and close the port: only the new master's answers count.
        orphans = {p.pid for p in psutil.Process(victim).children(recursive=True)}
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        while time.monotonic() < killed_at + 90:
            try:
                if not alive(orphans) and stack.find_service(pattern) not in (None, victim) \
                        and requests.get(url, timeout=1).ok:
                    times[name] = time.monotonic() - killed_at
                    break
            except requests.RequestException:
                pass
            time.sleep(0.1)
    with requests.Session() as http:
        job = http.post(stack.api + "/new_request?wait=20", data=b"Request number 3", timeout=30)
    record("make run: SIGKILL the API, then Flower", api_answering_again_s=times.get("api"),
           flower_answering_again_s=times.get("flower"))
    assert set(times) == {"api", "flower"}, times
    assert job.status_code == 200 and job.json()["input_text"] == "Request number 3"
    output = stack.output()
    assert restart_logged(output, "api", "terminated by SIGKILL", mark)
    assert restart_logged(output, "flower", "terminated by SIGKILL", mark)


def has_stayed_up(output: str, name: str) -> bool:
    """supervisord logged that the process, as last spawned, stayed up its start time (RUNNING)."""
    spawned = output.rfind(f"spawned: '{name}' with pid")
    return spawned >= 0 and output.find(f"success: {name} entered RUNNING state", spawned) >= 0


def wait_until_loaded(log: Path, pid: int, seconds: float) -> bool:
    """Wait up to seconds, less if the worker of that pid logs that its model is loaded; whether it did."""
    deadline, said = time.monotonic() + seconds, "loaded and warmed in "
    while time.monotonic() < deadline:
        # Its line names its pid: "model ... loaded and warmed in 0.22s, pid 1046, ...".
        if any(said in line and f"pid {pid}," in line for line in log_tail(log).splitlines()):
            return True
        time.sleep(0.01)
    return False


def log_tail(path: Path, size: int = 16384) -> str:
    """The end of a log file."""
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - size))
        return f.read().decode(errors="replace")


def metric(text: str, name: str) -> float:
    """One sample's value from Prometheus text."""
    [value] = [line.split()[1] for line in text.splitlines() if line.startswith(name + " ")]
    return float(value)


def test_a_worker_killed_again_and_again_while_starting_is_restarted_with_backoff_and_nothing_stops(stack):
    """The OOM killer's pattern: a worker that ran is SIGKILLed, then again at each start, before it is ready."""
    rng = random.Random(KILL_SEED)
    client, worker_name = stack.redis(), local_worker_node(1, socket.gethostname())
    redis_pid = client.info("server")["process_id"]
    # worker.1 has run (supervisord's RUNNING): from now on it may never be given up.
    deadline = time.monotonic() + START_SECONDS["worker"] + 90
    while not has_stayed_up(stack.output(), "worker.1") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert has_stayed_up(stack.output(), "worker.1"), stack.output()[-3000:]
    mark = len(stack.output())
    probe, trickle = ReadyProbe(stack.api).start(), Trickle(stack.api).start()

    victim = stack.service_pid(r"--hostname=w1@")
    killed_at = time.time()
    os.kill(victim, signal.SIGKILL)  # a crash after a long run: supervisord starts it again at once
    kills, metrics_during = [], None
    for n in range(KILLS_WHILE_STARTING):
        # The next start: a new process, killed at a random instant before it has sent any heartbeat.
        deadline = time.monotonic() + 60 + backoff_seconds(n)
        pid = None
        while pid in (None, victim) and time.monotonic() < deadline:
            pid = stack.find_service(r"--hostname=w1@")
            time.sleep(0.02)
        assert pid not in (None, victim), f"worker.1 was not started again after kill {n}:\n{stack.output()[-3000:]}"
        victim, seen_at = pid, time.monotonic()
        loaded = wait_until_loaded(stack.state / "logs" / "worker.1.log", victim, rng.uniform(0, KILL_WITHIN_SECONDS))
        beat = client.zscore(WORKERS_KEY, worker_name)
        os.kill(victim, signal.SIGKILL)
        # A beat stamped after the last kill can only be this process's: it would have been ready.
        kills.append({"pid": victim, "after_s": time.monotonic() - seen_at, "model_loaded": loaded,
                      "before_ready": beat is None or beat < killed_at})
        killed_at = time.time()
        if n == KILLS_WHILE_STARTING // 2:
            metrics_during = requests.get(stack.api + "/metrics", timeout=10).text

    # Then it is left alone: it comes back, beats, and /readyz counts both workers with none missing.
    last_kill = killed_at
    deadline = time.monotonic() + backoff_seconds(KILLS_WHILE_STARTING) + 120
    back = False
    while not back and time.monotonic() < deadline:
        beat = client.zscore(WORKERS_KEY, worker_name)
        back = beat is not None and beat > last_kill and probe.samples and probe.samples[-1][2:] == (2, ())
        time.sleep(0.2)
    outcomes = trickle.stop()
    accepted = [o.job_id for o in outcomes if o.status == 202]
    states = stack.wait_done(accepted, timeout=VISIBILITY_TIMEOUT + 60)
    samples = probe.stop()
    output = stack.output()[mark:]
    waits = [float(w) for w in re.findall(r"worker\.1 died .*?; starting it again in ([\d.]+)s", output)]
    missing_while_serving = [s for s in samples if s[1] == 200 and any(m.startswith("w1@") for m in s[3])]
    record("make run: SIGKILL a worker at each start, before it is ready", seed=KILL_SEED, kills=len(kills) + 1,
           killed_after_s=",".join(f"{k['after_s']:.2f}" for k in kills),
           killed_with_model_loaded=sum(k["model_loaded"] for k in kills), waits_s=",".join(f"{w:g}" for w in waits),
           submitted=len(outcomes), accepted=len(accepted), succeeded=sum(s == "SUCCESS" for s in states.values()),
           readyz_unanswered=sum(s[1] == 0 for s in samples), readyz_200_with_w1_missing=len(missing_while_serving),
           back=back)

    # Nothing stopped: the stack, its Redis (never restarted) and the API served throughout.
    assert stack.process.poll() is None, output[-3000:]
    assert "giving up:" not in output and "stopped: " not in output, output[-3000:]
    assert client.info("server")["process_id"] == redis_pid
    assert [s for s in samples if s[1] == 0] == [], "the API did not answer /readyz"
    assert [o.status for o in outcomes] == [202] * len(outcomes) and accepted
    assert all(s == "SUCCESS" for s in states.values()), states
    # Each kill hit a start, before the worker was ready, more times in a row than a never-started service gets.
    assert all(k["before_ready"] for k in kills), kills
    assert output.count("exited: worker.1 (terminated by SIGKILL; not expected)") == KILLS_WHILE_STARTING + 1
    assert KILLS_WHILE_STARTING > START_RETRIES + 1
    # The stack's lines show the backoff growing, one per failed start.
    assert waits == [backoff_seconds(n) for n in range(1, KILLS_WHILE_STARTING + 1)], output[-3000:]
    assert waits == [1, 2, 4, 8, 16] and "it ran before, so it is never given up" in output
    # Missing while the other worker served: /readyz named it, /metrics counted it; then it was back.
    assert missing_while_serving, samples[-20:]
    assert metric(metrics_during, "inferq_workers_missing") >= 1
    assert back, f"worker.1 did not come back:\n{output[-3000:]}"
    deadline = time.monotonic() + 30  # a heartbeat late on a busy machine shows as missing for a moment
    while (missing_after := metric(requests.get(stack.api + "/metrics", timeout=10).text,
                                   "inferq_workers_missing")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert missing_after == 0


def test_ctrl_c_stops_every_service_redis_last_and_leaves_nothing(stack):
    mark = len(stack.output())
    code = stack.interrupt()
    output = stack.output()[mark:]
    stopped = [line.split("stopped: ", 1)[1].split(" ")[0] for line in output.splitlines() if "INFO stopped: " in line]
    assert code == 0, output[-3000:]
    assert sorted(stopped) == ["api", "flower", "redis", "worker.1", "worker.2"], output[-3000:]
    assert stopped[-1] == "redis"
    time.sleep(0.5)
    assert alive(stack.pids) == [], "processes of the stack left running"
