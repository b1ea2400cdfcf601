"""A private inferq stack for fault tests: our own Redis, real workers, the API under gunicorn.

Fault tests kill and restart these processes, so they never share the
session's services. Workers run with a short visibility timeout (so a dead
worker's job comes back within seconds) and with test-only fault injection.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import requests

from inferq.broker.wire import result_key
from inferq.contract import WORKERS_KEY
from inferq.stack import processes
from inferq.stack.redis_server import RedisServer, free_port
from tests import holders

HOST = socket.gethostname()

VISIBILITY_TIMEOUT = 6
"""Seconds before Redis gives a dead worker's job to another: short, so tests see it happen."""

FAULT_ENV = {
    "INFERQ_TEST_FAULTS": "1",
    "INFERQ_TASK_TIME_LIMIT": "4",
    "INFERQ_TASK_SOFT_TIME_LIMIT": "3",
    "INFERQ_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT),
    "INFERQ_HEARTBEAT_SECONDS": "0.5",
    "INFERQ_MAX_TEXTS": "8",
    "INFERQ_API_WORKERS": "2",
}


class Stack:
    """Redis, named workers and an API, each restartable by the test."""

    def __init__(self, root: Path, model: Path, appendfsync: str = "everysec", **env: str):
        self.root = root
        self.redis = RedisServer(root / "redis", appendfsync=appendfsync)
        self.env = {**FAULT_ENV, "INFERQ_MODEL": str(model), **env}
        self.workers: dict[str, subprocess.Popen] = {}
        self.worker_env: dict[str, dict] = {}
        self.apis: list[subprocess.Popen] = []

    @property
    def client(self):
        return self.redis.client()

    def service_env(self, **extra: str) -> dict[str, str]:
        """Environment of a service process: our Redis plus the fault settings."""
        return {**self.env, "REDIS_URL": self.redis.url, **extra}

    def log(self, name: str) -> Path:
        return self.root / f"{name}.log"

    def start_redis(self) -> None:
        """Start (or restart, from its AOF) the stack's Redis on its port."""
        self.redis.start()

    def start_workers(self, names: list[str], timeout: float = 90, **extra: str) -> None:
        """Start workers together (their model loads overlap) and wait for each one's heartbeat."""
        for name in names:
            env = self.worker_env.get(name) or self.service_env(**extra)
            self.worker_env[name] = env
            self.workers[name] = processes.spawn(processes.worker_command(name), env, self.log(name))
        client = self.client
        for name in names:
            processes.wait_until(lambda name=name: client.zscore(WORKERS_KEY, f"{name}@{HOST}") is not None,
                                 timeout, f"worker {name}", self.workers[name], self.log(name))

    def ensure_workers(self) -> None:
        """Restart any worker that is no longer running (as a container's restart policy would)."""
        dead = [n for n, p in self.workers.items() if p.poll() is not None]
        if dead:
            for name in dead:
                self.client.zrem(WORKERS_KEY, f"{name}@{HOST}")
            self.start_workers(dead)

    def start_api(self, **extra: str) -> str:
        """Start one more API process; return its base URL."""
        bind = f"127.0.0.1:{free_port()}"
        log = self.log(f"api{len(self.apis)}")
        process = processes.spawn(processes.api_command(bind), self.service_env(**extra), log)
        self.apis.append(process)
        base = f"http://{bind}"
        processes.wait_until(lambda: processes.http_ok(base + "/healthz"), 30, "API", process, log)
        return base

    def kill_worker(self, name: str, sig: int = signal.SIGKILL) -> float:
        """Send sig to a worker; return the monotonic time it was sent."""
        sent = time.monotonic()
        os.kill(self.workers[name].pid, sig)
        return sent

    def meta(self, job_id: str) -> dict | None:
        """Celery's stored meta of a job, straight from Redis."""
        raw = self.client.get(result_key(job_id))
        return json.loads(raw) if raw else None

    def holder(self, job_id: str) -> str | None:
        """The worker (name, without @host) holding the job, if a worker holds it."""
        node = holders.holder(self.client, job_id)
        return node.split("@")[0] if node else None

    def statuses(self, job_ids) -> dict[str, str]:
        """Each job's Celery state (PENDING when nothing is stored), read in one round trip."""
        job_ids = list(job_ids)
        client = self.client
        out = {}
        for i in range(0, len(job_ids), 500):
            chunk = job_ids[i:i + 500]
            for job_id, raw in zip(chunk, client.mget([result_key(j) for j in chunk])):
                out[job_id] = json.loads(raw)["status"] if raw else "PENDING"
        return out

    def wait_done(self, job_ids, timeout: float) -> dict[str, str]:
        """Wait until every job has a final state or timeout passes; return the states."""
        deadline = time.monotonic() + timeout
        while True:
            states = self.statuses(job_ids)
            if all(s in ("SUCCESS", "FAILURE") for s in states.values()) or time.monotonic() > deadline:
                return states
            time.sleep(0.2)

    def deliveries(self, job_ids) -> dict[str, int]:
        """How many times a worker took each job (tests/holders.py)."""
        return holders.deliveries(self.client, job_ids)

    def consuming_workers(self, timeout: float = 45) -> tuple[set[str], float]:
        """Which workers take jobs, and how soon all of them did (seconds; inf if not all).

        Two sleeping jobs per worker at a time: with prefetch 1 each free worker takes
        one, so a worker that fetches nothing is missing. Rounds repeat until every
        worker has taken a job or timeout passes: after an outage a worker may still
        be in Celery's reconnect back-off (kombu waits 2, 4, 6 ... up to 30 s between
        attempts), which ends by itself; a worker that never fetches again does not.
        """
        from inferq.tasks.faults import SLEEP_PREFIX

        started = time.monotonic()
        seen: set[str] = set()
        with requests.Session() as http:
            while time.monotonic() < started + timeout:
                ids = [submit(http, self.api, f"{SLEEP_PREFIX}0.3").json()["job_id"]
                       for _ in range(2 * len(self.workers))]
                self.wait_done(ids, timeout=max(1.0, started + timeout - time.monotonic()))
                for meta in map(self.meta, ids):
                    if meta and meta["status"] == "SUCCESS":
                        seen.add(meta["result"]["worker"]["hostname"].split("@")[0])
                if seen >= set(self.workers):
                    return seen, time.monotonic() - started
        return seen, float("inf")

    def stop(self) -> None:
        """Stop everything the stack started."""
        for process in [*self.apis, *self.workers.values()]:
            processes.stop(process, timeout=10)
        self.redis.stop()


def submit(session: requests.Session, base: str, text: str, timeout: float = 5.0, **headers) -> requests.Response:
    """POST one text to /jobs."""
    return session.post(base + "/jobs", json={"text": text}, headers=headers, timeout=timeout)


def log_text(path: Path) -> str:
    """A process log, for asserting on what it said."""
    return path.read_text(errors="replace") if path.exists() else ""
