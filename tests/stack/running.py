"""inferq-stack as ``make run`` starts it, for tests that kill its services and watch it repair them."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest
import redis

from inferq.broker.wire import result_key
from inferq.stack.processes import BIN
from inferq.stack.readiness import READY_LINE


class RunningStack:
    """One inferq-stack process, its output, and every process it started (restarted ones included)."""

    def __init__(self, env: dict[str, str], state: Path, log: Path, args: tuple[str, ...] = ()):
        self.env, self.state, self.log, self.args = env, state, log, args
        self.api = env["INFERQ_API_URL"]
        self.flower = "http://" + env["INFERQ_FLOWER_BIND"]
        self.process: subprocess.Popen | None = None
        self.pids: set[int] = set()
        self._stop_sampling = threading.Event()

    def start(self, timeout: float = 150) -> RunningStack:
        """Start inferq-stack and wait for its ready line."""
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen([str(BIN / "inferq-stack"), *self.args], env=self.env, stdout=out,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)
        threading.Thread(target=self._sample_pids, daemon=True).start()
        self.wait_for(READY_LINE, timeout)
        return self

    def output(self) -> str:
        """Everything the stack printed so far."""
        return self.log.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float, after: int = 0) -> int:
        """Wait until the output (past offset after) contains text; its offset."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.output().find(text, after)
            if found >= 0:
                return found
            if self.process.poll() is not None:
                pytest.fail(f"inferq-stack exited with {self.process.returncode}:\n{self.output()[-4000:]}")
            time.sleep(0.1)
        pytest.fail(f"no {text!r} within {timeout}s:\n{self.output()[-4000:]}")

    def _descendants(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def _sample_pids(self) -> None:
        # Restarted services get new pids: remember every one, to check that none is left at the end.
        while self.process.poll() is None and not self._stop_sampling.is_set():
            self.pids |= {p.pid for p in self._descendants()}
            time.sleep(0.1)

    def find_service(self, pattern: str) -> int | None:
        """The pid of the service supervisord runs whose command line matches pattern, if one runs now."""
        for child in self._descendants():
            try:
                # A service is a child of supervisord, itself the stack's child.
                parent = child.parent()
                if parent is not None and parent.ppid() == self.process.pid \
                        and re.search(pattern, " ".join(child.cmdline())):
                    return child.pid
            except psutil.NoSuchProcess:
                continue
        return None

    def service_pid(self, pattern: str, timeout: float = 30) -> int:
        """The pid of the service matching pattern, waiting for it to run."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = self.find_service(pattern)
            if pid is not None:
                return pid
            time.sleep(0.05)
        pytest.fail(f"no service matching {pattern!r} within {timeout}s")

    def redis(self) -> redis.Redis:
        """A client of the stack's own Redis, from its private config (port and generated password)."""
        conf = dict(line.split(" ", 1) for line in (self.state / "redis" / "redis.conf").read_text().splitlines()
                    if " " in line)
        return redis.Redis(host="127.0.0.1", port=int(conf["port"]), password=conf["requirepass"],
                           socket_timeout=2, socket_connect_timeout=2)

    def statuses(self, job_ids: list[str]) -> dict[str, str]:
        """Each job's Celery state (PENDING while nothing is stored), straight from Redis."""
        client, out = self.redis(), {}
        for i in range(0, len(job_ids), 500):
            chunk = job_ids[i:i + 500]
            for job_id, raw in zip(chunk, client.mget([result_key(j) for j in chunk])):
                out[job_id] = json.loads(raw)["status"] if raw else "PENDING"
        return out

    def wait_done(self, job_ids: list[str], timeout: float) -> dict[str, str]:
        """Wait until every job has a final state, or timeout passes; the states."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                states = self.statuses(job_ids)
            except redis.RedisError:
                states = {}
            if (states and all(s in ("SUCCESS", "FAILURE") for s in states.values())) \
                    or time.monotonic() > deadline:
                return states or {j: "UNKNOWN" for j in job_ids}
            time.sleep(0.2)

    def interrupt(self, timeout: float = 90) -> int:
        """Ctrl-C, as a terminal sends it to the foreground command; the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self._stop_sampling.set()

    def kill_all(self) -> None:
        """Last resort after a failed test: SIGKILL the stack and everything it started."""
        for child in self._descendants():
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self._stop_sampling.set()


def command_lines(pids) -> dict[int, str]:
    """The command line of each of pids still running. Zombies count as gone: a child the stack has just seen
    exit (a short-lived check) is one until it is reaped, and psutil refuses its command line."""
    found = {}
    for pid in sorted(pids):
        try:
            p = psutil.Process(pid)
            if p.status() != psutil.STATUS_ZOMBIE:
                found[pid] = " ".join(p.cmdline())
        except psutil.NoSuchProcess:  # ZombieProcess too: it may become one between the two calls
            pass
    return found


def alive(pids) -> list[str]:
    """Those of pids still running (zombies count as gone), with their command lines."""
    return [f"{pid} {line}" for pid, line in command_lines(pids).items()]
