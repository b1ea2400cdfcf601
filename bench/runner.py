"""The benchmark's stages, in order, on one machine: each returns plain figures for the report."""
from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import requests

from inferq.bench import flops, loadgen, pinning, precision, priority, raw, seed, workload
from inferq.bench.progress import Progress
from inferq.bench.services import Services
from inferq.model.loader import resolve
from inferq.settings import ModelSource, current
from inferq.stack.stats import percentile

log = logging.getLogger(__name__)

BULK = 16
"""Texts per job in the bulk run: what a client that batches its own texts sees."""


def _bulk_jobs(plan) -> int:
    """Bulk jobs in the bulk run: enough that each client sends several (the first and last ones, when not
    every worker is busy, weigh little)."""
    return max(plan.sweep_jobs // BULK, 8 * plan.saturation_clients)


def _steps(plan, mixed: bool) -> int:
    return (1 + len(precision.PRECISIONS) + 2 + 1 + (1 if mixed else 0) + seed.SEED_CLIENTS * plan.seed_per_client
            + plan.idle_jobs + plan.seed_load_jobs + _bulk_jobs(plan) + plan.saturation_jobs
            + len(plan.sweep) * plan.sweep_jobs
            + len(plan.open_fractions) + (plan.scaling_jobs if mixed else 0)
            + 2 * plan.scaling_jobs + 2 * plan.scaling_jobs + 1)


def _interactive_behind_bulk(url: str, texts: list[str]) -> dict:
    """Single texts submitted behind 10,240 texts of bulk work in jobs of the largest size the API accepts
    (bench/priority.py), then the backlog drained."""
    result = priority.interactive_behind_bulk(url, bulk_text=lambda i: texts[i % len(texts)])
    result.pop("interactive_job_ids")
    with requests.Session() as session:  # the next stage starts on an empty queue
        for job_id in result.pop("bulk_job_ids"):
            session.get(f"{url}/jobs/{job_id}", params={"wait": 60}, timeout=90)
    return result


def _run_summary(run: loadgen.Run, flops_per_text: float, peak: float) -> dict:
    return {"label": run.label, "jobs": len(run.samples), "errors": run.errors, "seconds": run.seconds,
            "tps": run.tps, "p50_ms": run.percentile(50), "p95_ms": run.percentile(95),
            "p99_ms": run.percentile(99), "mfu": run.tps * flops_per_text / peak,
            "per_worker": dict(Counter(s.worker for s in run.samples))}


def _costed(services: Services, load: Callable[[], loadgen.Run]) -> tuple[loadgen.Run, dict]:
    """Run a load; return it with what each job cost: CPU ms per process, Redis commands and Redis CPU ms."""
    cpu_before, (calls_before, redis_before) = services.cpu_seconds(), services.redis_counters()
    run = load()
    cpu_after, (calls_after, redis_after) = services.cpu_seconds(), services.redis_counters()
    jobs = max(1, len(run.samples))
    return run, {"cpu_ms_per_job": {k: 1000 * (cpu_after[k] - cpu_before[k]) / jobs for k in cpu_before},
                 "redis_cmds_per_job": (calls_after - calls_before) / jobs,
                 "redis_cpu_ms_per_job": 1000 * (redis_after - redis_before) / jobs}


SERVICE_CPUS, WORKER_CPUS = {0}, {1}
"""The reference layout on two cores: the API, Redis and the load generator on one, the workers on the other."""


def _reference_layout(plan, args, services: Services, texts, per_text, peak, out, progress) -> None:
    """Workers on a core of their own, as on the reference deployment where they have hosts of their own:
    inferq's throughput there over the raw model's on that one core is the worker's efficiency."""
    progress.stage("raw model on one core")
    cache = current(ModelSource).cache
    model_dir = services.env["INFERQ_MODEL"]
    r = raw.run(model_dir, cache, args.precision, texts, 1, plan.raw_seconds, cpus=WORKER_CPUS)
    progress()
    progress.stage(f"inferq: reference layout, {args.workers} worker(s) on core 1")
    services.start_workers(args.workers)
    services.pin(SERVICE_CPUS, WORKER_CPUS)
    pinning.pin(os.getpid(), SERVICE_CPUS, children=False)
    try:
        run, cost = _costed(services, lambda: loadgen.closed_loop(
            services.url, texts, plan.saturation_clients, plan.scaling_jobs, "reference layout", progress))
    finally:
        everything = pinning.all_cpus()
        pinning.pin(os.getpid(), everything, children=False)
        services.pin(everything, everything)
    out["reference"] = {**_run_summary(run, per_text, peak), **cost, "raw_one_core_tps": r.tps,
                        "raw_one_core_cpu_ms_per_text": r.cpu_ms_per_text}


def run(plan, args, tmp: Path) -> dict:
    """Run every stage; return everything measured."""
    from transformers import AutoConfig, AutoTokenizer

    mixed = plan.mixed
    progress = Progress(_steps(plan, mixed))
    out: dict = {"workers": args.workers, "workload": args.workload, "precision": args.precision,
                 "batch_size": args.batch_size, "model": plan.model}
    try:
        progress.stage("building the model")
        cache = current(ModelSource).cache
        model_dir = resolve(plan.model, cache)
        texts = workload.texts(args.workload, plan.texts)
        mixed_texts = workload.texts("mixed", plan.texts) if mixed else []
        tokenizer, config = AutoTokenizer.from_pretrained(model_dir), AutoConfig.from_pretrained(model_dir)
        tokens = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=512)["input_ids"]]
        per_text = flops.text_flops(tokens, config) / len(texts)
        out.update(mean_tokens=sum(tokens) / len(tokens), gflop_per_text=per_text / 1e9)
        if mixed:
            mixed_tokens = [len(ids) for ids in tokenizer(mixed_texts, truncation=True, max_length=512)["input_ids"]]
            out["mixed_gflop_per_text"] = flops.text_flops(mixed_tokens, config) / len(mixed_texts) / 1e9
        progress()

        progress.stage("precision paths side by side")
        out["precisions"] = precision.compare(model_dir, cache, texts[:plan.precision_texts])
        progress(len(precision.PRECISIONS))

        progress.stage("matmul peak")
        out["peak_1"] = flops.matmul_peak(1, plan.peak_seconds)
        progress()
        out["peak_w"] = flops.matmul_peak(args.workers, plan.peak_seconds)
        progress()
        peak = out["peak_w"]

        progress.stage(f"raw model x{args.workers}")
        r = raw.run(model_dir, cache, args.precision, texts, args.workers, plan.raw_seconds)
        out["raw"] = {**vars(r), "mfu": r.tps * per_text / peak}
        progress()
        if mixed:
            r = raw.run(model_dir, cache, args.precision, mixed_texts, args.workers, plan.raw_seconds)
            out["raw_mixed"] = {**vars(r), "mfu": r.tps * out["mixed_gflop_per_text"] * 1e9 / peak}
            progress()

        progress.stage("seed design")
        base, procs = seed.start(model_dir, args.workers, tmp)
        try:
            s = seed.run_load(base, texts, plan.seed_per_client, progress)
        finally:
            for p in procs:
                seed.processes.stop(p)
        lat = s.pop("latencies_ms")
        out["seed"] = {**s, "p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99), "latencies_ms": lat}

        progress.stage("inferq: starting")
        services = Services(tmp, {"INFERQ_MODEL": model_dir, "INFERQ_MODEL_CACHE": cache,
                                  "INFERQ_PRECISION": args.precision, "INFERQ_BATCH_SIZE": str(args.batch_size)})
        try:
            services.start_workers(args.workers)
            _inferq(plan, args, services, texts, mixed_texts, per_text, peak, out, progress)
        finally:
            services.close()
    finally:
        progress.close()
    return out


def _inferq(plan, args, services, texts, mixed_texts, per_text, peak, out, progress) -> None:
    url = services.url
    progress.stage("inferq: one job at a time, idle")
    samples = loadgen.idle_jobs(url, texts, plan.idle_jobs)
    progress(len(samples))
    overheads = sorted(s.latency_ms - s.inference_ms for s in samples)
    out["idle"] = {"jobs": len(samples), "overhead_p50_ms": overheads[len(overheads) // 2],
                   "latency_p50_ms": sorted(s.latency_ms for s in samples)[len(samples) // 2],
                   "inference_p50_ms": sorted(s.inference_ms for s in samples)[len(samples) // 2]}

    progress.stage("inferq: the seed's load (5 clients)")
    run = loadgen.closed_loop(url, texts, seed.SEED_CLIENTS, plan.seed_load_jobs, "seed load", progress)
    out["seed_load"] = _run_summary(run, per_text, peak)
    out["seed_load_latencies_ms"] = sorted(s.latency_ms for s in run.samples)

    progress.stage("inferq: saturation")
    # A short burst at the same load first, unrecorded: micro-batching gives the inference runtime batch
    # shapes it has not seen at lighter loads, and its memory arena grows once to hold them. RSS growth
    # over the run below is then what a leak would show.
    loadgen.closed_loop(url, texts, plan.saturation_clients, 10 * plan.saturation_clients, "warm-up")
    rss_before = services.worker_rss_mb()
    run, cost = _costed(services, lambda: loadgen.closed_loop(url, texts, plan.saturation_clients,
                                                              plan.saturation_jobs, "saturation", progress))
    rss_after = services.worker_rss_mb()
    # Where the CPU went, per job: the profile that says what holds end-to-end throughput back.
    out["cpu_ms_per_job"] = cost.pop("cpu_ms_per_job")
    out["redis_per_job"] = cost
    out["saturation"] = _run_summary(run, per_text, peak)
    out["saturation_latencies_ms"] = sorted(s.latency_ms for s in run.samples)
    out["rss"] = {"before_mb": rss_before, "after_mb": rss_after, "jobs": len(run.samples),
                  "growth": max(a / b - 1 for a, b in zip(rss_after, rss_before))}

    progress.stage(f"inferq: bulk jobs of {BULK} texts")
    bulk = [texts[i:i + BULK] for i in range(0, len(texts) - BULK + 1, BULK)]
    run, cost = _costed(services, lambda: loadgen.closed_loop(url, bulk, plan.saturation_clients,
                                                              _bulk_jobs(plan), "bulk", progress))
    out["bulk"] = {"texts_per_job": BULK, "jobs": len(run.samples), "seconds": run.seconds,
                   "tps": len(run.samples) * BULK / run.seconds, "p50_ms": run.percentile(50),
                   "per_worker": dict(Counter(s.worker for s in run.samples)), **cost}

    progress.stage(f"inferq: single texts behind {priority.BULK_TEXTS:,} queued bulk texts")
    out["priority"] = _interactive_behind_bulk(url, texts)

    out["sweep"] = []
    for clients in plan.sweep:
        progress.stage(f"inferq: {clients} clients")
        run = loadgen.closed_loop(url, texts, clients, plan.sweep_jobs, f"{clients} clients", progress)
        out["sweep"].append({"clients": clients, **_run_summary(run, per_text, peak)})

    out["open"] = []
    for fraction in plan.open_fractions:
        rate = fraction * out["saturation"]["tps"]
        progress.stage(f"inferq: open loop {rate:.0f}/s")
        run = loadgen.open_loop(url, texts, rate, plan.open_seconds, f"open {rate:.0f}/s")
        progress()
        out["open"].append({"rate": rate, **_run_summary(run, per_text, peak)})

    if mixed_texts:
        progress.stage("inferq: mixed workload")
        run = loadgen.closed_loop(url, mixed_texts, plan.saturation_clients, plan.scaling_jobs, "mixed", progress)
        out["mixed"] = _run_summary(run, out["mixed_gflop_per_text"] * 1e9, peak)

    # The same load with micro-batching off: what batching changes, side by side in this run.
    progress.stage(f"inferq: INFERQ_BATCH_SIZE=1, {args.workers} worker(s)")
    services.start_workers(args.workers, {"INFERQ_BATCH_SIZE": "1"})
    run, cost = _costed(services, lambda: loadgen.closed_loop(url, texts, plan.saturation_clients,
                                                              plan.scaling_jobs, "unbatched", progress))
    out["unbatched"] = {**_run_summary(run, per_text, peak), **cost}

    if (os.cpu_count() or 1) >= 2:
        _reference_layout(plan, args, services, texts, per_text, peak, out, progress)

    out["scaling"] = {args.workers: out["saturation"]["tps"]}
    for n in (1, plan.squeeze_workers):
        progress.stage(f"inferq: {n} worker(s)")
        services.start_workers(n)
        run = loadgen.closed_loop(url, texts, plan.saturation_clients, plan.scaling_jobs, f"W={n}", progress)
        out["scaling"][n] = run.tps
