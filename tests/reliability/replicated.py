"""A fault-test stack on a replicated Redis: a primary, a replica and three Sentinels (stack/sentinel.py).

Every process (APIs, workers, the test's own client) finds the primary through the Sentinels, with the
timings a test can wait for: a primary is called down after 1.5 s, the shortest inferq accepts.
"""
from __future__ import annotations

import time
from functools import cached_property
from pathlib import Path

import redis

from inferq import redislink
from inferq.settings import Failover, RedisLink, load
from inferq.stack import processes
from inferq.stack.sentinel import ReplicatedRedis
from tests.reliability.stack import Stack, log_text

TEST_FAILOVER = {"INFERQ_SENTINEL_DOWN_AFTER_SECONDS": "1.5", "INFERQ_SENTINEL_FAILOVER_TIMEOUT_SECONDS": "3"}
"""Sentinel timings for tests: down after 1.5 s of silence (settings.parts.MIN_DOWN_AFTER_SECONDS), a failover
retried after 3 s."""


class ReplicatedStack(Stack):
    """Stack's workers and APIs on a ReplicatedRedis."""

    def __init__(self, root: Path, model: Path, **env: str):
        super().__init__(root, model, **env)
        self.group = ReplicatedRedis(root / "replicated", load(Failover, TEST_FAILOVER), appendfsync="always")

    @cached_property
    def client(self) -> redis.Redis:  # type: ignore[override]
        """The test's own client of whichever node is primary (one client: Sentinel's pool follows failovers)."""
        link = load(RedisLink, self.group.env())
        return redislink.client(link, link.backend, socket_timeout=2, socket_connect_timeout=2)

    def service_env(self, **extra: str) -> dict[str, str]:
        return {**self.env, **self.group.env(), **extra}

    def start_redis(self) -> None:
        self.group.start()

    def settled(self, timeout: float = 60) -> None:
        """Until the Sentinels name a primary with a replica in sync and the test's client reaches it."""
        self.group.wait_replicated(timeout)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.client.ping()
                return
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        for process in [*self.apis, *self.workers.values()]:
            processes.stop(process, timeout=10)
        self.group.stop()


def workers_kept_our_transport(stack: Stack) -> None:
    """Every (re)connection of every worker went through inferq's transport, never kombu's own, which a
    ';'-separated broker URL would switch a worker to after a failed connect (redislink.worker_broker_url)."""
    for name in stack.workers:
        connected = [line for line in log_text(stack.log(name)).splitlines() if "Connected to " in line]
        assert connected and all("inferq.broker.transport:SentinelTransport" in line for line in connected), connected
