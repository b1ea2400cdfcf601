"""A replicated Redis of our own: a primary, a replica and three Sentinels, on loopback ports.

The same redis-server binary runs all five (``redis-server sentinel.conf --sentinel``: Debian ships no
redis-sentinel here). The tests' failover cases and ``inferq-stack --ha`` start it. Both data nodes share
one password and say it to each other (``masterauth``), so either can be the primary; the Sentinels
listen on loopback without a password and know the nodes' (``auth-pass``).
"""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import redis

from inferq.settings import Failover
from inferq.settings.parts import LOCAL_SENTINELS
from inferq.stack.redis_server import RedisServer, RedisUnavailable, ServerProcess, find_binary, free_port

SENTINELS = LOCAL_SENTINELS
"""Sentinels a group runs."""

NODE_ARGS = (
    # A replica that comes back (the old primary, restarted) syncs at once, not after the default 5 s
    # wait for other replicas to share a diskless transfer.
    "repl-diskless-sync-delay 0",
)


def sentinels_ready(addresses: list[tuple[str, int]], master_name: str) -> bool:
    """Whether every Sentinel knows the primary's replica and the other Sentinels: only then can they fail over.

    A Sentinel learns of replicas from the primary's INFO, which it reads every 10 s, and of the other
    Sentinels from their hello messages (every 2 s): a primary lost in the first seconds would not be replaced.
    """
    for host, port in addresses:
        try:
            state: Any = redis.Redis(host=host, port=port, socket_timeout=1).sentinel_master(master_name)
            if int(state["num-slaves"]) < 1 or int(state["num-other-sentinels"]) < len(addresses) - 1:
                return False
        except (redis.RedisError, OSError, KeyError):
            return False
    return True


class SentinelServer(ServerProcess):
    """One Sentinel: a redis-server --sentinel child watching the primary named master_name."""

    what, log_name = "sentinel", "sentinel.log"

    def __init__(self, data_dir: str | os.PathLike, master_name: str, primary: tuple[str, int], password: str,
                 timings: Failover, port: int | None = None, bind: str = "127.0.0.1"):
        self.data_dir = Path(data_dir)
        self.port, self.bind = port or free_port(), bind
        self.master_name, self.primary, self.password, self.timings = master_name, primary, password, timings
        self.process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"{self.bind}:{self.port}"

    def write_config(self) -> Path:
        """sentinel.conf (mode 600: it holds the nodes' password). Sentinel rewrites it as it learns: kept
        between restarts, it remembers the current primary."""
        path = self.data_dir / "sentinel.conf"
        if path.exists():
            return path
        name, (host, port), t = self.master_name, self.primary, self.timings
        lines = [
            f"port {self.port}", f"bind {self.bind}", f'dir "{self.data_dir}"',
            f"sentinel monitor {name} {host} {port} {t.quorum}",
            f"sentinel auth-pass {name} {self.password}",
            f"sentinel down-after-milliseconds {name} {int(t.down_after * 1000)}",
            f"sentinel failover-timeout {name} {int(t.failover_timeout * 1000)}",
            f"sentinel parallel-syncs {name} 1",
        ]
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path

    def command(self) -> list[str]:
        return [find_binary(), str(self.write_config()), "--sentinel"]

    def client(self) -> redis.Redis:
        return redis.Redis(host=self.bind, port=self.port, socket_timeout=2)


class ReplicatedRedis:
    """A primary, a replica of it and three Sentinels watching them, under root."""

    def __init__(self, root: str | os.PathLike, timings: Failover, master_name: str = "inferq",
                 appendfsync: str = "everysec"):
        self.root = Path(root)
        self.master_name, self.timings = master_name, timings
        self.primary = RedisServer(self.root / "redis-a", appendfsync=appendfsync)
        password = self.primary.password
        self.primary.extra_args = (*NODE_ARGS, f"masterauth {password}")
        self.replica = RedisServer(self.root / "redis-b", password=password, appendfsync=appendfsync,
                                   extra_args=self.primary.extra_args,
                                   replica_of=(self.primary.bind, self.primary.port))
        self.sentinels = [SentinelServer(self.root / f"sentinel-{i}", master_name,
                                         (self.primary.bind, self.primary.port), password, timings)
                          for i in range(1, SENTINELS + 1)]

    @property
    def nodes(self) -> list[RedisServer]:
        return [self.primary, self.replica]

    @property
    def password(self) -> str:
        return self.primary.password

    @property
    def url(self) -> str:
        """REDIS_URL for processes that go through the Sentinels: its password and database (its host is not used)."""
        return f"redis://:{self.password}@{self.primary.bind}:{self.primary.port}/0"

    @property
    def sentinel_setting(self) -> str:
        """INFERQ_REDIS_SENTINELS."""
        return ",".join(s.address for s in self.sentinels)

    def env(self, min_replicas: int = 1) -> dict[str, str]:
        """The environment that points a process at this group."""
        return {"REDIS_URL": self.url, "INFERQ_REDIS_SENTINELS": self.sentinel_setting,
                "INFERQ_REDIS_MASTER_NAME": self.master_name, "INFERQ_REDIS_MIN_REPLICAS": str(min_replicas)}

    def start(self, timeout: float = 20.0) -> ReplicatedRedis:
        """Start the nodes and Sentinels; return once the replica is in sync and every Sentinel knows it."""
        self.primary.start()
        self.replica.start()
        for sentinel in self.sentinels:
            sentinel.start()
        self.wait_replicated(timeout)
        return self

    def wait_replicated(self, timeout: float = 30.0) -> RedisServer:
        """Wait until the Sentinels agree on a primary that has a replica in sync, every Sentinel seeing it
        (and the others); return that primary."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                primary = self.current_primary()
                info = primary.client().info("replication")
                seen = sentinels_ready([(s.bind, s.port) for s in self.sentinels
                                        if s.process and s.process.poll() is None], self.master_name)
                synced = any(str(v.get("state")) == "online" for k, v in info.items()
                             if k.startswith("slave") and isinstance(v, dict))
                if synced and seen and self._acknowledges(primary):
                    return primary
            except (redis.RedisError, OSError, KeyError):
                pass
            if time.monotonic() > deadline:
                raise RedisUnavailable(f"no primary with an online replica within {timeout}s")
            time.sleep(0.1)

    @staticmethod
    def _acknowledges(primary: RedisServer) -> bool:
        """Whether a replica acknowledges a write within 0.2 s, as WAIT counts it. INFO says a replica is
        online from the end of the transfer, while it may still be loading what it received; a WAIT then
        times out. The probe is a PUBLISH on a channel nobody reads: replicated, yet it leaves no key."""
        with primary.client().pipeline(transaction=False) as pipe:
            pipe.publish("inferq:replication-probe", "1")
            pipe.wait(1, 200)
            return int(pipe.execute()[-1]) >= 1

    def master_address(self) -> tuple[str, int]:
        """Where the Sentinels (the first that answers) say the primary is."""
        for sentinel in self.sentinels:
            try:
                address: Any = sentinel.client().sentinel_get_master_addr_by_name(self.master_name)
                host, port = address
                return str(host.decode() if isinstance(host, bytes) else host), int(port)
            except (redis.RedisError, OSError, TypeError):
                continue
        raise RedisUnavailable("no Sentinel answers")

    def current_primary(self) -> RedisServer:
        """The node the Sentinels call primary."""
        port = self.master_address()[1]
        return next(node for node in self.nodes if node.port == port)

    def current_replica(self) -> RedisServer:
        """The node the Sentinels do not call primary."""
        primary = self.current_primary()
        return next(node for node in self.nodes if node is not primary)

    def failovers(self) -> int:
        """How many times the Sentinels switched the primary, as the Sentinel that saw most switches logged them
        (each logs +switch-master once a failover is done)."""
        return max(((s.data_dir / s.log_name).read_text(errors="replace").count("+switch-master")
                    for s in self.sentinels if (s.data_dir / s.log_name).exists()), default=0)

    def restart_as_replica(self, node: RedisServer) -> None:
        """Start a node that was stopped (the old primary) as a replica of the current primary, as a supervisor
        asking the Sentinels would: it then takes the primary's data, not its own stale files."""
        host, port = self.master_address()
        node.replica_of = None if port == node.port else (host, port)
        node.start()

    def stop(self) -> None:
        for sentinel in self.sentinels:
            sentinel.stop()
        for node in self.nodes:
            node.stop()
