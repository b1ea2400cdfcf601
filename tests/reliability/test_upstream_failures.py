"""Celery's and kombu's known failure modes on Redis, each a test named after its upstream issue."""
from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
import requests
from celery import Celery

from inferq import contract
from inferq.broker import wake, wire
from inferq.contract import WORKERS_KEY
from inferq.tasks.faults import FAIL_JOB, SLEEP_PREFIX
from tests.figures import record
from tests.reliability.stack import HOST, VISIBILITY_TIMEOUT, Stack, submit

pytestmark = pytest.mark.slow


def runs_of(log_dir: Path) -> Counter:
    """How often each job's state was stored, from the workers' run logs (tasks/faults.record_runs)."""
    return Counter(line.split(" ", 1)[0] for path in log_dir.glob("runs-*.log")
                   for line in path.read_text().splitlines())


def test_kombu_337_celery_4400_a_job_longer_than_the_visibility_timeout_runs_once(tiny_model, tmp_path):
    """kombu's visibility timeout gives a running job to a second worker once it outlasts the timeout; here
    its worker renews the lease at every heartbeat, so it runs once however long it takes."""
    runs = tmp_path / "runs"
    runs.mkdir()
    job_seconds = 3 * VISIBILITY_TIMEOUT
    stack = Stack(tmp_path, tiny_model, INFERQ_TEST_RUN_LOG=str(runs), INFERQ_TASK_TIME_LIMIT="120",
                  INFERQ_TASK_SOFT_TIME_LIMIT="100")
    stack.start_redis()
    try:
        stack.start_workers(["w1", "w2"])
        api = stack.start_api()
        with requests.Session() as http:
            long_job = submit(http, api, f"{SLEEP_PREFIX}{job_seconds}").json()["job_id"]
            # The other worker stays busy taking short jobs meanwhile: it scans for leases run out all along.
            deadline = time.monotonic() + job_seconds + 5
            short = []
            while time.monotonic() < deadline and stack.meta(long_job) is None:
                short.append(submit(http, api, "a short job").json()["job_id"])
                time.sleep(0.2)
        states = stack.wait_done([long_job, *short], timeout=60)
        deliveries = stack.deliveries([long_job])[long_job]
    finally:
        stack.stop()
    counted = runs_of(runs)
    record("kombu#337 / celery#4400: a job three visibility timeouts long", job_s=job_seconds,
           visibility_timeout_s=VISIBILITY_TIMEOUT, runs=counted[long_job], deliveries=deliveries,
           short_jobs=len(short))
    assert set(states.values()) == {"SUCCESS"}
    assert counted[long_job] == 1 and deliveries == 1, "the job was given to a second worker while it ran"


def test_celery_8030_10302_workers_keep_consuming_after_redis_restarts(stack):
    """A worker whose broker restarts reconnects and consumes again, without being restarted itself."""
    stack.ensure_workers()
    pids = {name: process.pid for name, process in stack.workers.items()}
    back_s = []
    for how in ("kill -9", "stop and start", "kill -9"):
        if how == "kill -9":
            stack.redis.kill()
        else:
            stack.redis.stop()
        time.sleep(1)
        stack.start_redis()
        consuming, seconds = stack.consuming_workers(timeout=60)
        assert consuming == set(stack.workers), f"after Redis's {how}, only {sorted(consuming)} consume"
        back_s.append(round(seconds, 1))
    record("celery#8030 / #10302: Redis restarted three times", every_worker_consuming_after_s=back_s,
           workers_restarted=sum(p.pid != pids[n] for n, p in stack.workers.items()))
    assert {name: process.pid for name, process in stack.workers.items()} == pids


def test_kombu_1405_sigterm_while_jobs_are_given_back_loses_none(tiny_model, tmp_path):
    """A burst of SIGTERMs at a worker holding a batch: the first gives every job back to its queue at once,
    the others do not break into that give-back, and nothing is left recorded for a worker that is gone."""
    queue = f"sigterm-{uuid.uuid4().hex[:8]}"
    stack = Stack(tmp_path, tiny_model, INFERQ_QUEUE=queue, INFERQ_BATCH_SIZE="16")
    stack.start_redis()
    try:
        client = stack.client
        jobs = [uuid.uuid4().hex for _ in range(16)]
        for i, job_id in enumerate(jobs):  # queued before the worker starts: it takes them as one batch
            text = f"{SLEEP_PREFIX}5" if i == 0 else f"batch-mate {i}"
            wake.push(client, queue, wire.classify_envelope(job_id, [text], time.time(), queue))
        stack.start_workers(["w1"])
        deadline = time.monotonic() + 20
        while client.hlen(wire.UNACKED_KEY) < len(jobs) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert client.hlen(wire.UNACKED_KEY) == len(jobs), "the worker did not take the batch"
        worker = stack.workers["w1"]
        for _ in range(40):  # a supervisor that repeats itself, every 5 ms
            try:
                os.kill(worker.pid, signal.SIGTERM)
            except ProcessLookupError:
                break
            time.sleep(0.005)
        worker.wait(timeout=30)
        queued, recorded = client.llen(queue), client.hlen(wire.UNACKED_KEY)
        client.zrem(WORKERS_KEY, f"w1@{HOST}")
        stack.start_workers(["w1"])
        states = stack.wait_done(jobs, timeout=60)
    finally:
        stack.stop()
    record("kombu#1405: 40 SIGTERMs at a worker holding a batch of 16", exit_code=worker.returncode,
           queued_after_exit=queued, recorded_after_exit=recorded,
           succeeded=sum(s == "SUCCESS" for s in states.values()))
    assert (queued, recorded) == (len(jobs), 0), "not every job went back to its queue at once"
    # (Its exit status may say SIGTERM: a late one that lands as the interpreter finalizes, which restores
    # the default handlers, after the give-back above.)
    assert set(states.values()) == {"SUCCESS"}


JOBS = 20_000
FAILING_SHARE = 10  # one job in ten raises (celery#8882: memory leaked with each exception)
WARM_UP = 4_000
"""Jobs before worker memory is first read: the allocator's pools settle over the first few thousand jobs."""

PER_JOB_KEYS = ("inferq:job:", "celery-task-meta-", "inferq:deliveries:", "inferq:cancel:", "inferq:callback:",
                "inferq:holding:")
"""Keys made per job (or per worker name): each must expire."""

LASTING_KEYS = {wire.UNACKED_KEY, wire.UNACKED_INDEX_KEY, WORKERS_KEY, contract.WAKE_KEY,
                contract.MALFORMED_KEY, contract.SUBMITTED_KEY, contract.SUCCEEDED_KEY, contract.FAILED_KEY,
                contract.CANCELLED_KEY, contract.LATENCY_KEY, "inferq", "inferq.bulk"}
"""Keys that may last: a fixed set, however many jobs ran (and kombu's _kombu.binding* keys, one per queue)."""


def test_celery_7801_6089_8882_no_key_grows_and_worker_memory_stays_flat_over_20000_jobs(tiny_model, tmp_path):
    """20,000 jobs, one in ten raising, Flower-style inspect calls all along: every per-job key expires, no
    pidbox reply list is left behind, the unacknowledged record ends empty, and worker memory stays flat."""
    stack = Stack(tmp_path, tiny_model, INFERQ_API_WORKERS="2")
    stack.start_redis()
    inspector = Celery("flower-like", broker=stack.redis.url)
    inspector.conf.update(accept_content=["json"], task_serializer="json", result_serializer="json")
    stop_inspecting = threading.Event()
    pings = []

    def inspect_like_flower():
        while not stop_inspecting.is_set():
            pings.append(bool(inspector.control.inspect(timeout=0.5).ping()))
            stop_inspecting.wait(1)

    try:
        stack.start_workers(["w1", "w2"])
        api = stack.start_api()
        texts = [FAIL_JOB if i % FAILING_SHARE == 0 else f"text number {i}" for i in range(JOBS)]
        local = threading.local()

        def one(text: str) -> int:
            if not hasattr(local, "session"):
                local.session = requests.Session()
            return submit(local.session, api, text, timeout=30).status_code

        inspecting = threading.Thread(target=inspect_like_flower, daemon=True)
        inspecting.start()
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(one, texts[:WARM_UP]))
            _drain(stack)
            warm = {name: psutil.Process(p.pid).memory_info().rss for name, p in stack.workers.items()}
            statuses += list(pool.map(one, texts[WARM_UP:]))
        _drain(stack)
        stop_inspecting.set()
        inspecting.join()
        end = {name: psutil.Process(p.pid).memory_info().rss for name, p in stack.workers.items()}
        time.sleep(12)  # past Celery's control_queue_expires (10 s): reply lists must be gone by now
        client = stack.client
        keys = [k.decode() for k in client.scan_iter(count=1000)]
        ttl = dict(zip(keys, [client.ttl(k) for k in keys]))
        counts = Counter(prefix for k in keys for prefix in PER_JOB_KEYS if k.startswith(prefix))
        lasting = sorted(k for k, t in ttl.items() if t == -1)
        unexpected = [k for k in lasting if k not in LASTING_KEYS and not k.startswith("_kombu.binding")]
        not_expiring = [k for k in lasting if k.startswith(PER_JOB_KEYS)]
        replies = [k for k in keys if k.endswith("reply.celery.pidbox") and not k.startswith("_kombu.binding.")]
        unacked = client.hlen(wire.UNACKED_KEY)
        metrics = {k: int(client.get(k) or 0) for k in (contract.SUCCEEDED_KEY, contract.FAILED_KEY)}
    finally:
        stop_inspecting.set()
        inspector.close()
        stack.stop()
    growth = {name: end[name] / warm[name] - 1 for name in warm}
    record("celery#7801 / #6089 / #8882: 20,000 jobs, one in ten raising",
           accepted=statuses.count(202), succeeded=metrics[contract.SUCCEEDED_KEY],
           failed=metrics[contract.FAILED_KEY], keys=len(keys), lasting_keys=len(lasting),
           per_job_keys=dict(counts), reply_lists_left=len(replies), inspect_calls=len(pings),
           unacked_left=unacked, rss_warm_mb={n: round(v / 2**20, 1) for n, v in warm.items()},
           rss_growth={n: round(g, 4) for n, g in growth.items()})
    assert statuses.count(202) == JOBS and metrics[contract.FAILED_KEY] == JOBS // FAILING_SHARE
    assert metrics[contract.SUCCEEDED_KEY] == JOBS - JOBS // FAILING_SHARE
    assert not_expiring == [], "per-job keys without an expiry"
    assert unexpected == [], "keys that last and are not in the fixed set"
    assert replies == [], "pidbox reply lists left behind"
    assert unacked == 0 and pings and all(pings)
    assert max(growth.values()) <= 0.05, "worker memory grew"


def _drain(stack: Stack, timeout: float = 300) -> None:
    """Wait until both lanes are empty and nothing is held."""
    deadline = time.monotonic() + timeout
    client = stack.client
    while time.monotonic() < deadline:
        if client.llen("inferq") + client.llen("inferq.bulk") + client.hlen(wire.UNACKED_KEY) == 0:
            return
        time.sleep(0.2)
    raise AssertionError("the jobs did not drain")


class MemoryLimit:
    """A memory cgroup of its own, what a container's memory limit is made of (v1 here; v2 where mounted so)."""

    def __init__(self, name: str, limit_bytes: int):
        v1 = Path("/sys/fs/cgroup/memory")
        self.v2 = not v1.is_dir()
        self.path = (Path("/sys/fs/cgroup") if self.v2 else v1) / name
        self.path.mkdir()
        (self.path / ("memory.max" if self.v2 else "memory.limit_in_bytes")).write_text(str(limit_bytes))
        if not self.v2 and (self.path / "memory.memsw.limit_in_bytes").exists():
            (self.path / "memory.memsw.limit_in_bytes").write_text(str(limit_bytes))  # no swap to spill into

    def command(self, command: list[str]) -> list[str]:
        """command, started inside the limit (the shell joins the cgroup, then becomes the command)."""
        return ["sh", "-c", f'echo $$ > {self.path}/cgroup.procs && exec "$@"', "sh", *command]

    def oom_kills(self) -> int:
        text = (self.path / ("memory.events" if self.v2 else "memory.oom_control")).read_text()
        return int(dict(line.split() for line in text.splitlines()).get("oom_kill", 0))

    def remove(self) -> None:
        self.path.rmdir()


def test_celery_1628_a_worker_oom_killed_inside_its_memory_limit_gets_its_job_back_bounded(tiny_model, tmp_path):
    """A job that makes its worker exceed its memory limit: the kernel's OOM killer SIGKILLs the worker, which
    comes back under its name (a restart policy) and gets the job back, until INFERQ_MAX_DELIVERIES fails it;
    the jobs beside it succeed."""
    from inferq.settings import Worker, load
    from inferq.stack import processes
    from inferq.tasks.faults import EXHAUST_MEMORY

    max_deliveries = load(Worker, {}).max_deliveries
    limit = MemoryLimit(f"inferq-oom-{uuid.uuid4().hex[:8]}", 400 * 2**20)
    stack = Stack(tmp_path, tiny_model)
    stack.start_redis()
    restarts = 0
    try:
        env = stack.service_env()
        def start_worker() -> None:
            stack.client.zrem(WORKERS_KEY, f"w1@{HOST}")
            stack.workers["w1"] = processes.spawn(limit.command(processes.worker_command("w1")), env,
                                                  stack.log(f"w1-{restarts}"))
        start_worker()
        api = stack.start_api()
        with requests.Session() as http:
            hog = submit(http, api, EXHAUST_MEMORY).json()["job_id"]
            others = [submit(http, api, f"beside the hog {i}").json()["job_id"] for i in range(20)]
        deadline = time.monotonic() + 240
        while stack.meta(hog) is None and time.monotonic() < deadline:
            if stack.workers["w1"].poll() is not None:  # the restart policy: the same name, the same limit
                restarts += 1
                start_worker()
            time.sleep(0.2)
        states = stack.wait_done([hog, *others], timeout=60)
        deliveries = stack.deliveries([hog])[hog]
        kills = limit.oom_kills()
        hog_meta = stack.meta(hog)
    finally:
        stack.stop()
        limit.remove()
    record("celery#1628: a job that makes its worker exceed a 400 MiB memory limit", oom_kills=kills,
           worker_restarts=restarts, deliveries=deliveries, status=states[hog],
           others_succeeded=sum(states[j] == "SUCCESS" for j in others))
    assert kills == restarts == max_deliveries, "the kernel did not OOM-kill the worker at each delivery"
    assert states[hog] == "FAILURE" and hog_meta["result"]["exc_type"] == "PoisonJob"
    assert deliveries == max_deliveries + 1
    assert all(states[j] == "SUCCESS" for j in others)
