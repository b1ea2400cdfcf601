"""inferq's services for a benchmark run: our own Redis, W workers and the API under gunicorn."""
from __future__ import annotations

import socket
from functools import partial
from pathlib import Path

import psutil

from inferq.bench import pinning
from inferq.contract import WORKERS_KEY
from inferq.settings import Durability, current
from inferq.stack import processes
from inferq.stack.redis_server import RedisServer, free_port


class Services:
    """Redis, API and a set of workers that can be restarted at another count."""

    def __init__(self, log_dir: Path, env: dict[str, str], redis: RedisServer | None = None,
                 redis_env: dict[str, str] | None = None, appendfsync: str | None = None):
        # redis, redis_env: a Redis started by the caller (the primary of a replicated one, bench/replication.py)
        # and the settings that reach it; the caller stops it. Else our own Redis, stopped by close(), with the
        # fsync policy the product runs (INFERQ_REDIS_APPENDFSYNC) unless appendfsync says otherwise.
        self.log_dir = log_dir
        self.own_redis = redis is None
        self.redis = redis or RedisServer(log_dir / "redis",
                                          appendfsync=appendfsync or current(Durability).appendfsync).start()
        self.client = self.redis.client()
        self.env = {"REDIS_URL": self.redis.url, **(redis_env or {}), "INFERQ_HEARTBEAT_SECONDS": "0.5",
                    # Many waiting jobs: admission control must not refuse the benchmark's load.
                    "INFERQ_MAX_QUEUE_DEPTH": "1000000", **env}
        self.workers: list = []
        self.generation = 0
        bind = f"127.0.0.1:{free_port()}"
        log = log_dir / "api.log"
        self.api = processes.spawn(processes.api_command(bind), self.env, log)
        self.url = f"http://{bind}"
        processes.wait_until(lambda: processes.http_ok(self.url + "/healthz"), 60, "API", self.api, log)

    def start_workers(self, n: int, extra_env: dict[str, str] | None = None) -> None:
        """Stop the current workers and start n new ones; return once each has sent a heartbeat."""
        self.stop_workers()
        self.generation += 1
        env = {**self.env, **(extra_env or {})}
        started = []
        for k in range(n):
            name = f"bench{self.generation}-{k}"
            log = self.log_dir / f"{name}.log"
            started.append((name, log, processes.spawn(processes.worker_command(name), env, log)))
        for name, log, proc in started:
            full = f"{name}@{socket.gethostname()}"
            processes.wait_until(partial(self.heartbeat_seen, full), 600, f"worker {name}", proc, log)
        self.workers = [proc for _, _, proc in started]

    def heartbeat_seen(self, node: str) -> bool:
        """Whether the worker named node (name@host) has sent a heartbeat."""
        return self.client.zscore(WORKERS_KEY, node) is not None

    def worker_rss_mb(self) -> list[float]:
        """Resident memory of each worker process (the solo pool runs jobs in that process)."""
        return [psutil.Process(p.pid).memory_info().rss / 2**20 for p in self.workers]

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time (user + system) so far of each component, to split a run's cost per job."""
        def cpu(pid: int, children: bool) -> float:
            proc = psutil.Process(pid)
            procs = [proc, *proc.children(recursive=True)] if children else [proc]
            total = 0.0
            for p in procs:
                try:
                    t = p.cpu_times()
                    total += t.user + t.system
                except psutil.NoSuchProcess:
                    pass
            return total

        return {"api (gunicorn)": cpu(self.api.pid, True), "redis": cpu(self.redis.pid, False),
                "workers": sum(cpu(p.pid, False) for p in self.workers),
                "load generator": cpu(psutil.Process().pid, False)}

    def redis_counters(self) -> tuple[int, float]:
        """Commands Redis has run so far (INFO commandstats, scripts' commands included) and its CPU seconds."""
        calls = sum(int(stat["calls"]) for stat in self.client.info("commandstats").values())
        cpu = self.client.info("cpu")
        return calls, float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])

    def pin(self, service_cpus: set[int], worker_cpus: set[int]) -> None:
        """Put the API and Redis on service_cpus and the workers on worker_cpus (every thread of each)."""
        pinning.pin(self.api.pid, service_cpus)
        pinning.pin(self.redis.pid, service_cpus)
        for proc in self.workers:
            pinning.pin(proc.pid, worker_cpus)

    def stop_workers(self) -> None:
        """Stop every worker (warm shutdown)."""
        for proc in self.workers:
            processes.stop(proc)
        self.workers = []

    def close(self) -> None:
        """Stop workers, API and Redis."""
        self.stop_workers()
        processes.stop(self.api)
        if self.own_redis:
            self.redis.stop()
