"""One settings object per kind of process: the parts it reads and its own fields, checked together."""
from __future__ import annotations

import os
from dataclasses import dataclass

from inferq.settings.parser import ConfigError, Section, setting
from inferq.settings.parts import (
    USER_STATE_DIR,
    ApiAddress,
    ApiKeys,
    Delivery,
    Durability,
    Failover,
    ModelSource,
    RedisLink,
    Webhooks,
)

PRECISIONS = ("fp32", "int8", "onnx-fp32", "onnx-int8")
"""Inference paths a worker can run: torch fp32 or int8 (dynamic quantization), ONNX Runtime fp32 or int8."""

LEASE_BEATS = 3
"""Heartbeats a job's lease must outlast at least: its worker renews it at every beat, and one late beat
(a busy machine, a Redis restarting) must not give a running job to a second worker."""


@dataclass(frozen=True)
class Worker(Section):
    """A worker process: the model it runs, how, and when it gives up on a job."""

    redis: RedisLink
    delivery: Delivery
    model: ModelSource
    webhooks: Webhooks
    precision: str = setting("INFERQ_PRECISION", "onnx-int8", "The inference path (docs/performance.md).",
                             choices=PRECISIONS)
    torch_threads: int = setting("INFERQ_TORCH_THREADS", 1, "Threads of one worker's inference (one per "
                                 "worker process: more oversubscribes the cores).", minimum=1)
    max_deliveries: int = setting("INFERQ_MAX_DELIVERIES", 3, "Starts of a job that never finishes before it "
                                  "is failed as a poison job.", minimum=1)
    test_faults: bool = setting("INFERQ_TEST_FAULTS", False, "Test only: texts that make a job sleep or kill "
                                "its worker (tasks/faults.py). Never in a deployment.")
    test_pass_seconds: float = setting("INFERQ_TEST_PASS_SECONDS", 0.0, "Test only, with INFERQ_TEST_FAULTS: "
                                       "each forward pass takes at least this long (a base-size model's pace on "
                                       "the tiny one).", minimum=0)
    test_run_log: str = setting("INFERQ_TEST_RUN_LOG", "", "Test only, with INFERQ_TEST_FAULTS: a directory "
                                "where each worker process appends a line per job state it stores (the crash "
                                "checker counts runs from them).")

    def check(self) -> None:
        """Refuse limits that would give a running job to a second worker or expire it while it runs."""
        delivery, redis = self.delivery, self.redis
        hard, soft = delivery.task_time_limit, delivery.soft_time_limit
        if soft > hard:
            raise ConfigError(f"INFERQ_TASK_SOFT_TIME_LIMIT={soft} exceeds INFERQ_TASK_TIME_LIMIT={hard}")
        # A worker renews its jobs' leases at every heartbeat: a lease shorter than a few beats would
        # run out between two renewals, and a job still running would go to a second worker.
        if delivery.visibility_timeout < LEASE_BEATS * redis.heartbeat_seconds:
            raise ConfigError(
                f"INFERQ_VISIBILITY_TIMEOUT={delivery.visibility_timeout}s must be at least {LEASE_BEATS} "
                f"heartbeats (INFERQ_HEARTBEAT_SECONDS={redis.heartbeat_seconds:g}), or a running job's lease "
                "runs out between two renewals; raise the timeout or beat faster")
        if redis.result_ttl < hard:
            raise ConfigError(f"INFERQ_RESULT_TTL={redis.result_ttl}s is shorter than INFERQ_TASK_TIME_LIMIT="
                              f"{hard}s: a job could expire while it runs")


@dataclass(frozen=True)
class Api(Section):
    """The HTTP API: where it listens and what it accepts."""

    redis: RedisLink
    keys: ApiKeys
    address: ApiAddress
    webhooks: Webhooks
    workers: int = setting("INFERQ_API_WORKERS", 2, "gunicorn worker processes.", minimum=1)
    threads: int = setting("INFERQ_API_THREADS", 32, "Threads per gunicorn worker (long-polls hold one).",
                           minimum=1)
    max_texts: int = setting("INFERQ_MAX_TEXTS", 256, "Texts one job may carry.", minimum=1)
    max_body_bytes: int = setting("INFERQ_MAX_BODY_BYTES", 1024 * 1024, "Largest request body (413 past it).",
                                  minimum=1)
    max_wait_seconds: float = setting("INFERQ_MAX_WAIT_SECONDS", 30.0, "Longest ?wait= a request may hold.",
                                      minimum=0)
    max_queue_depth: int = setting("INFERQ_MAX_QUEUE_DEPTH", 10000, "Waiting jobs in one lane (interactive "
                                   "or bulk) past which submits to that lane get 429.", minimum=1)
    retry_after: int = setting("INFERQ_RETRY_AFTER", 2, "Retry-After seconds of a 429.", minimum=1)
    redis_memory_high: float = setting("INFERQ_REDIS_MEMORY_HIGH", 0.8, "Share of Redis's maxmemory past which "
                                       "submits get 429, before Redis itself refuses writes (the rest is room for "
                                       "the results of jobs already accepted); 1: only Redis's own limit.",
                                       minimum=0.05)

    def check(self) -> None:
        """Refuse a memory threshold past Redis's own limit."""
        if self.redis_memory_high > 1:
            raise ConfigError(f"INFERQ_REDIS_MEMORY_HIGH={self.redis_memory_high:g} must be at most 1 "
                              "(a share of Redis's maxmemory)")


@dataclass(frozen=True)
class Client(Section):
    """The command-line client: which API to talk to, with which key."""

    address: ApiAddress
    api_url: str = setting("INFERQ_API_URL", "", "The API's URL; several, separated by commas, for a cluster "
                           "with several API addresses (a second orchestrator): the client moves to the next "
                           "when one does not answer (unset: from INFERQ_API_BIND).")
    api_key: str = setting("INFERQ_API_KEY", "", "The key the client sends (the API checks INFERQ_API_KEYS).")
    api_cert_sha256: str = setting("INFERQ_API_CERT_SHA256", "", "SHA-256 fingerprint of the API's TLS "
                                   "certificate, the only one accepted (a deployed cluster's self-signed one: "
                                   "`fab -r deploy status` prints it); with several INFERQ_API_URL addresses, "
                                   "one per address in the same order, separated by commas (empty: that address "
                                   "unpinned), or one for all.")

    @property
    def urls(self) -> list[str]:
        """The API's base URLs, in the order they are tried: as set, else the bind address."""
        given = [url.strip().rstrip("/") for url in self.api_url.split(",") if url.strip()]
        if given:
            return given
        host, _, port = self.address.bind.rpartition(":")
        if host in ("", "0.0.0.0", "::", "[::]"):
            host = "127.0.0.1"
        return [f"http://{host}:{port}"]

    @property
    def url(self) -> str:
        """The API's (first) base URL: as set, else the bind address (every interface: loopback)."""
        return self.urls[0]


@dataclass(frozen=True)
class Stack(Section):
    """The local stack (make run, make demo): its services, ports and state."""

    redis: RedisLink
    model: ModelSource
    keys: ApiKeys
    client: Client
    durability: Durability
    failover: Failover
    state_dir: str = setting("INFERQ_STATE_DIR", str(USER_STATE_DIR), "Where the stack keeps Redis's data, logs "
                             "and Flower's login.", shown="$XDG_STATE_HOME/inferq (~/.local/state/inferq)")
    workers: int = setting("WORKERS", 0, "Worker processes (0: one per core).", minimum=0)
    flower_bind: str = setting("INFERQ_FLOWER_BIND", "127.0.0.1:5555", "host:port Flower listens on.")
    ready_timeout: float = setting("INFERQ_STACK_READY_TIMEOUT", 600.0, "Seconds the stack may take to be "
                                   "ready before it gives up.", minimum=1)
    hf_hub_offline: bool = setting("HF_HUB_OFFLINE", False, "Hugging Face's own: never ask the hub.")
    transformers_offline: bool = setting("TRANSFORMERS_OFFLINE", False, "The same, transformers' older name.")

    @property
    def worker_count(self) -> int:
        """Workers to start: as set, else one per core."""
        return self.workers or os.cpu_count() or 1

    @property
    def external_redis(self) -> bool:
        """REDIS_URL (or INFERQ_BROKER_URL) set means "use that Redis": the stack starts none."""
        return bool(self.redis.url or self.redis.broker_url)

    @property
    def hub_offline(self) -> bool:
        """The hub must not be asked."""
        return self.hf_hub_offline or self.transformers_offline
