"""Start inferq's own processes (workers, API) as children, and wait for them.

Tests and benchmarks use these; the foreground stack runs the same commands
(commands.py) under supervisord. Each process gets its settings through the
environment, as inferq.settings reads them.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import requests

from inferq import commands

BIN = Path(sys.executable).parent
"""Console scripts of the environment inferq is installed in."""


def worker_command(name: str) -> list[str]:
    """The worker command the stack and the container run, as worker name@this host."""
    return commands.worker(f"{name}@%h", str(BIN))


def api_command(bind: str) -> list[str]:
    """The API under gunicorn, as the stack runs it, on bind."""
    return commands.api(str(BIN), bind)


def spawn(command: list[str], env: Mapping[str, str], log_path: Path) -> subprocess.Popen:
    """Start a child in its own process group, output to log_path."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "ab")
    return subprocess.Popen(command, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)


def wait_until(predicate: Callable[[], bool], timeout: float, what: str,
               process: subprocess.Popen | None = None, log_path: Path | None = None) -> None:
    """Poll predicate until true; fail with the log's tail if the process dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {process.returncode}\n{tail(log_path)}")
        try:
            if predicate():
                return
        except Exception:  # not up yet: connection refused, 503 ...
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what}: not ready within {timeout}s\n{tail(log_path)}")


def tail(log_path: Path | None, lines: int = 30) -> str:
    """The last lines of a log, for error messages."""
    if log_path is None or not log_path.exists():
        return ""
    return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])


def http_ok(url: str) -> bool:
    """True when url answers 200."""
    return requests.get(url, timeout=1).status_code == 200


def stop(process: subprocess.Popen, timeout: float = 15.0, sig: int = signal.SIGTERM) -> None:
    """Stop a child and its process group: sig first, SIGKILL if it lingers."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
