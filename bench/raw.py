"""The ceiling: the model called directly in W processes at once, one thread each, batch 1."""
from __future__ import annotations

import multiprocessing
import time
from dataclasses import dataclass

from inferq.stack.stats import percentile


@dataclass
class RawResult:
    """What the raw run measured."""

    processes: int
    precision: str
    texts: int
    seconds: float
    tps: float
    p50_ms: float
    rss_mb: float
    cpu_ms_per_text: float
    """CPU time the model took per text (a contended machine stretches wall time, not this)."""


def _run(model_dir, cache, precision, texts, seconds, barrier, queue, cpus):
    import os

    import psutil

    if cpus:
        os.sched_setaffinity(0, cpus)  # before the model starts any thread: they inherit it

    from inferq.model.inference import classify
    from inferq.model.loader import load

    loaded = load(model_dir, cache, precision, torch_threads=1)
    classify(loaded, texts[:3])  # warm, as a worker does
    barrier.wait()
    latencies, start, cpu = [], time.perf_counter(), time.process_time()
    i = 0
    while time.perf_counter() - start < seconds:
        t = time.perf_counter()
        classify(loaded, [texts[i % len(texts)]])
        latencies.append(time.perf_counter() - t)
        i += 1
    queue.put((len(latencies), time.perf_counter() - start, latencies,
               psutil.Process().memory_info().rss / 2**20, time.process_time() - cpu))


def run(model_dir: str, cache: str, precision: str, texts: list[str], processes: int,
        seconds: float, cpus: set[int] | None = None) -> RawResult:
    """Run the model in `processes` processes for `seconds`; texts are dealt out round robin.

    cpus: the cores the processes run on (default: any).
    """
    ctx = multiprocessing.get_context("spawn")  # never fork after torch started threads
    barrier, queue = ctx.Barrier(processes), ctx.Queue()
    procs = [ctx.Process(target=_run, args=(model_dir, cache, precision, texts[k::processes],
                                             seconds, barrier, queue, cpus)) for k in range(processes)]
    for p in procs:
        p.start()
    outs = [queue.get(timeout=seconds + 600) for _ in procs]
    for p in procs:
        p.join()
    count = sum(o[0] for o in outs)
    elapsed = max(o[1] for o in outs)
    latencies = [x for o in outs for x in o[2]]
    return RawResult(processes, precision, count, elapsed, count / elapsed,
                     percentile(latencies, 50) * 1000, max(o[3] for o in outs),
                     1000 * sum(o[4] for o in outs) / count)
