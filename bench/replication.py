"""What durability costs per job: the same load on one Redis with `appendfsync everysec`, on one with the default
`always`, and on a primary with a replica (Sentinel, WAIT; `always` too).

Side by side, on the same machine and model: jobs one at a time on an idle system (the latency a job pays:
an fsync before each write's answer, the API's WAIT before its 202, the worker's WAIT before its
acknowledgement), then clients in a closed loop (throughput), and the Redis commands per job on the primary.
Each layout starts its own processes (bench/services.py; stack/sentinel.py for the replicated one).

    python -m inferq.bench.replication [--model offline:base] [--jobs 400] [--clients 8] [--workers 2]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from inferq.bench import loadgen, workload
from inferq.bench.services import Services
from inferq.model.loader import resolve
from inferq.settings import Durability, Failover, ModelSource, current, load
from inferq.stack.sentinel import ReplicatedRedis
from inferq.stack.stats import percentile

LAYOUTS = ("single-everysec", "single", "replicated")
"""single-everysec: what a job costs without an fsync per write (and what it risks: docs/operations.md)."""


def measure(services: Services, texts: list[str], jobs: int, clients: int, idle: int) -> dict:
    """Idle latency, then a closed loop's throughput and latency, and Redis's commands per job in it."""
    idle_samples = loadgen.idle_jobs(services.url, texts, idle)
    calls_before, _ = services.redis_counters()
    run = loadgen.closed_loop(services.url, texts, clients, jobs, "closed loop")
    calls_after, _ = services.redis_counters()
    return {"idle_p50_ms": percentile([s.latency_ms for s in idle_samples], 50),
            "idle_p99_ms": percentile([s.latency_ms for s in idle_samples], 99),
            "tps": run.tps, "p50_ms": run.percentile(50), "p99_ms": run.percentile(99), "errors": run.errors,
            "redis_cmds_per_job": (calls_after - calls_before) / max(1, len(run.samples))}


def run_layout(layout: str, root: Path, env: dict[str, str], workers: int, texts: list[str], jobs: int,
               clients: int, idle: int) -> dict:
    """Start one layout's processes, measure, stop them."""
    group = None
    appendfsync = "everysec" if layout == "single-everysec" else current(Durability).appendfsync
    if layout == "replicated":
        group = ReplicatedRedis(root / "replicated", load(Failover, {}), appendfsync=appendfsync).start()
        services = Services(root, env, redis=group.primary, redis_env=group.env())
    else:
        services = Services(root, env, appendfsync=appendfsync)
    try:
        services.start_workers(workers)
        return {"layout": layout, **measure(services, texts, jobs, clients, idle)}
    finally:
        services.close()
        if group is not None:
            group.stop()


def table(rows: list[dict]) -> str:
    """The two layouts side by side, and what one costs over the other, as markdown."""
    lines = ["| layout | idle job p50 ms | idle p99 ms | texts/s (closed loop) | p50 ms | p99 ms | "
             "Redis commands per job (primary) |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['layout']} | {r['idle_p50_ms']:.1f} | {r['idle_p99_ms']:.1f} | {r['tps']:.1f} | "
                     f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['redis_cmds_per_job']:.1f} |")
    return "\n".join(lines)


def compare(model: str, workers: int, jobs: int, clients: int, idle: int, precision: str) -> list[dict]:
    """Both layouts, one after the other, on fresh processes."""
    texts = workload.texts("short", 512)
    env = {"INFERQ_MODEL": str(resolve(model, current(ModelSource).cache)), "INFERQ_PRECISION": precision}
    with tempfile.TemporaryDirectory(prefix="inferq-bench-replication-") as tmp:
        return [run_layout(layout, Path(tmp) / layout, env, workers, texts, jobs, clients, idle)
                for layout in LAYOUTS]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inferq.bench.replication", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="offline:base")
    parser.add_argument("--precision", default="onnx-int8")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=400, help="jobs of the closed loop")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--idle", type=int, default=50, help="jobs one at a time")
    args = parser.parse_args(argv)
    rows = compare(args.model, args.workers, args.jobs, args.clients, args.idle, args.precision)
    print(table(rows))
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
