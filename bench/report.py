"""Write RESULTS.md and the plots, and build the one-line JSON summary."""
from __future__ import annotations

import json
from pathlib import Path

PLOTS = ("throughput.png", "latency.png")


def summary(r: dict) -> dict:
    """The headline figures (the last line the benchmark prints)."""
    raw_tps, seed_tps, e2e = r["raw"]["tps"], r["seed"]["tps"], r["saturation"]["tps"]
    w = r["workers"]
    one = r["scaling"].get(1)
    squeezed = {k: v for k, v in r["scaling"].items() if k not in (1, w)}
    return {
        "workers": w, "workload": r["workload"], "precision": r["precision"], "batch_size": r["batch_size"],
        "mode": r["mode"], "model": r["model"],
        "raw_tps": round(raw_tps, 2), "seed_tps": round(seed_tps, 2), "e2e_tps": round(e2e, 2),
        "e2e_over_raw": round(e2e / raw_tps, 3),
        # At the seed's load (5 client threads), as the target compares.
        "seed_load_tps": round(r["seed_load"]["tps"], 2),
        "e2e_over_seed": round(r["seed_load"]["tps"] / seed_tps, 2),
        "p50_ms": round(r["seed_load"]["p50_ms"], 2), "p99_ms": round(r["seed_load"]["p99_ms"], 2),
        "seed_p50_ms": round(r["seed"]["p50_ms"], 1),
        "saturation_p50_ms": round(r["saturation"]["p50_ms"], 2),
        "saturation_p99_ms": round(r["saturation"]["p99_ms"], 2),
        "idle_overhead_ms": round(r["idle"]["overhead_p50_ms"], 2),
        "rss_mb": round(max(r["rss"]["after_mb"]), 1), "rss_growth": round(r["rss"]["growth"], 4),
        "rss_jobs": r["rss"]["jobs"],
        "one_worker_tps": round(one, 2) if one else None,
        "scaling_w_over_1": round(e2e / one, 3) if one else None,
        **{f"w{k}_over_w{w}": round(v / e2e, 3) for k, v in squeezed.items()},
        "bulk16_tps": round(r["bulk"]["tps"], 2) if "bulk" in r else None,
        "raw_cpu_ms_per_text": round(r["raw"]["cpu_ms_per_text"], 2),
        "e2e_cpu_ms_per_job": round(sum(r["cpu_ms_per_job"].values()), 2) if "cpu_ms_per_job" in r else None,
        "raw_mfu": round(r["raw"]["mfu"], 3), "e2e_mfu": round(r["saturation"]["mfu"], 3),
        "peak_gflops": round(r["peak_w"] / 1e9, 1),
        **_batching_keys(r, raw_tps),
    }


def _spread(per_worker: dict) -> float | None:
    """Fewest jobs one worker ran over the most another ran (1.0: perfectly even)."""
    counts = list(per_worker.values())
    return round(min(counts) / max(counts), 3) if len(counts) > 1 else None


def _batching_keys(r: dict, raw_tps: float) -> dict:
    """What micro-batching, the reference layout and Redis's cost per job add to the summary."""
    keys: dict = {}
    if "redis_per_job" in r:
        keys["redis_cmds_per_job"] = round(r["redis_per_job"]["redis_cmds_per_job"], 2)
        keys["redis_cpu_ms_per_job"] = round(r["redis_per_job"]["redis_cpu_ms_per_job"], 4)
    if "bulk" in r:
        keys["bulk_over_raw"] = round(r["bulk"]["tps"] / raw_tps, 3)
        if "redis_cmds_per_job" in r["bulk"]:
            keys["bulk_redis_cmds_per_job"] = round(r["bulk"]["redis_cmds_per_job"], 2)
            keys["bulk_redis_cpu_ms_per_job"] = round(r["bulk"]["redis_cpu_ms_per_job"], 4)
    if "reference" in r:
        ref = r["reference"]
        keys["worker_efficiency"] = round(ref["tps"] / ref["raw_one_core_tps"], 3)
        keys["reference_tps"] = round(ref["tps"], 2)
        keys["raw_one_core_tps"] = round(ref["raw_one_core_tps"], 2)
    if "unbatched" in r:
        keys["unbatched_tps"] = round(r["unbatched"]["tps"], 2)
        keys["unbatched_e2e_over_raw"] = round(r["unbatched"]["tps"] / raw_tps, 3)
        keys["unbatched_redis_cmds_per_job"] = round(r["unbatched"]["redis_cmds_per_job"], 2)
    keys["worker_spread"] = _spread(r["saturation"]["per_worker"])
    if "priority" in r:
        for key in ("interactive_behind_bulk_p50_ms", "interactive_behind_bulk_p99_ms", "bulk_texts", "texts_per_job"):
            keys[key if key.startswith("interactive") else f"priority_{key}"] = r["priority"].get(key)
    return keys


def _row(*cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def markdown(r: dict, s: dict) -> str:
    """RESULTS.md: the tables, the machine and the command."""
    w = r["workers"]
    lines = [
        "# inferq benchmark results", "",
        f"Command: `{r['command']}` ({r['mode']} run)  ",
        f"Machine: {r['machine']}  ",
        f"Model: `{r['model']}` (DistilBERT, random weights), workload `{r['workload']}` "
        f"(mean {r['mean_tokens']:.1f} tokens, {r['gflop_per_text']:.2f} GFLOP per text), W = {w}, "
        f"precision `{r['precision']}`, INFERQ_BATCH_SIZE = {r['batch_size']}.", "",
        "## Side by side", "",
        _row("what", "texts/s", "p50 ms", "p99 ms", "MFU"), _row("---", "---", "---", "---", "---"),
        _row(f"raw model, {w} processes x 1 thread, batch 1", f"{r['raw']['tps']:.1f}",
             f"{r['raw']['p50_ms']:.1f}", "", f"{r['raw']['mfu']:.2f}"),
        _row(f"seed design ({w} Flask model servers, fp32, default threads), 5 clients",
             f"{r['seed']['tps']:.1f}", f"{r['seed']['p50_ms']:.0f}", f"{r['seed']['p99_ms']:.0f}", ""),
    ]
    for key in ("seed_load", "saturation"):
        x = r[key]
        lines.append(_row(f"inferq end to end, {x['label']} ({x['jobs']} jobs, closed loop)", f"{x['tps']:.1f}",
                          f"{x['p50_ms']:.1f}", f"{x['p99_ms']:.1f}", f"{x['mfu']:.2f}"))
    if "bulk" in r:
        x = r["bulk"]
        lines.append(_row(f"inferq end to end, bulk jobs of {x['texts_per_job']} texts, saturation",
                          f"{x['tps']:.1f}", f"{x['p50_ms']:.1f} (per job)", "", ""))
    if "mixed" in r:
        x = r["mixed"]
        lines.append(_row("raw model, mixed workload", f"{r['raw_mixed']['tps']:.1f}",
                          f"{r['raw_mixed']['p50_ms']:.1f}", "", f"{r['raw_mixed']['mfu']:.2f}"))
        lines.append(_row("inferq end to end, mixed workload, saturation", f"{x['tps']:.1f}", f"{x['p50_ms']:.1f}",
                          f"{x['p99_ms']:.1f}", f"{x['mfu']:.2f}"))
    lines += ["", f"MFU: FLOPs the texts need (batch 1, unpadded) per second, over the fp32 matmul peak "
              f"measured in this run: {r['peak_1'] / 1e9:.1f} GFLOP/s on one core, "
              f"{r['peak_w'] / 1e9:.1f} GFLOP/s with {w} processes. int8 kernels can exceed the fp32 peak.", "",
              "## Targets", "",
              _row("target", "measured"), _row("---", "---"),
              _row("e2e_over_raw >= 0.6 (one text per job, everything on the same cores)", s["e2e_over_raw"]),
              _row("worker_efficiency >= 0.9 (reference layout, one text per job)",
                   s.get("worker_efficiency", "not run (needs 2 cores)")),
              _row("redis_cmds_per_job <= 10 (one text per job)", s.get("redis_cmds_per_job")),
              _row("bulk_over_raw >= 1.0", s.get("bulk_over_raw")),
              _row(f"a single text behind {s.get('priority_bulk_texts')} queued bulk texts in jobs of "
                   f"{s.get('priority_texts_per_job')}: p50 <= 250 ms, p99 <= 1000 ms",
                   f"{s.get('interactive_behind_bulk_p50_ms')} ms, {s.get('interactive_behind_bulk_p99_ms')} ms"),
              _row("at 5 clients: >= 25x the seed's throughput", s["e2e_over_seed"]),
              _row("at 5 clients: p99 <= 100 ms", f"{s['p99_ms']} ms"),
              _row("at 5 clients: p50 <= 1/10 of the seed's", f"{s['p50_ms']} ms vs {s['seed_p50_ms']} ms"),
              _row("idle job: latency minus model time, p50 <= 5 ms", f"{s['idle_overhead_ms']} ms"),
              _row("worker RSS <= 400 MB, growth <= 5%",
                   f"{s['rss_mb']} MB, {100 * s['rss_growth']:.1f}% over {s['rss_jobs']} jobs"),
              _row(f"{w} workers >= 1.8 x one worker", s["scaling_w_over_1"]),
              ]
    for k in s:
        if k.startswith("w") and "_over_w" in k:
            lines.append(_row(f"{k.split('_')[0][1:]} workers >= 0.8 x {w} workers", s[k]))
    lines += ["", "## Inference paths (one process, one thread, batch 1)", "",
              _row("precision", "texts/s", "label agreement with fp32", "max |p - p_fp32|"),
              _row("---", "---", "---", "---")]
    for p in r["precisions"]:
        lines.append(_row(p["precision"], f"{p['tps']:.1f}", f"{100 * p['agreement']:.1f}%",
                          f"{p['max_prob_diff']:.4f}"))
    margin = r["precisions"][0]["fp32_median_margin"]
    lines += ["", f"Over {r['precisions'][0]['texts']} of the benchmark's texts; fp32's median "
              f"top probability is 0.5 + {margin:.3f} (random weights: a label flips when a path moves a "
              "probability past 0.5, which says little about how a trained model would fare).", "",
              "## Concurrency (closed loop) and open loop", "",
              _row("load", "jobs", "texts/s", "p50 ms", "p95 ms", "p99 ms", "jobs per worker"),
              _row("---", "---", "---", "---", "---", "---", "---")]
    for x in r["sweep"] + r["open"]:
        lines.append(_row(x["label"], x["jobs"], f"{x['tps']:.1f}", f"{x['p50_ms']:.1f}", f"{x['p95_ms']:.1f}",
                          f"{x['p99_ms']:.1f}", ", ".join(f"{v}" for v in x["per_worker"].values())))
    if "cpu_ms_per_job" in r:
        lines += ["", "## Where the CPU goes at saturation (CPU ms per job, all processes on these cores)", "",
                  _row("component", "CPU ms per job"), _row("---", "---")]
        for k, v in r["cpu_ms_per_job"].items():
            lines.append(_row(k, f"{v:.2f}"))
        lines.append(_row("total", f"{sum(r['cpu_ms_per_job'].values()):.2f}"))
        lines += ["", f"For comparison, the raw model needs {r['raw']['cpu_ms_per_text']:.2f} ms of CPU per "
                  "text. Every process shares the same cores, so end-to-end throughput is bounded by "
                  f"{r['workers']} cores / total CPU per job."]
    lines += _batching_tables(r, s)
    lines += ["", "## Workers", "",
              _row("workers", "texts/s"), _row("---", "---")]
    for n, tps in sorted(r["scaling"].items()):
        lines.append(_row(n, f"{tps:.1f}"))
    lines += ["", f"One idle job: p50 latency {r['idle']['latency_p50_ms']:.1f} ms, of which the worker's "
              f"inference {r['idle']['inference_p50_ms']:.1f} ms.", "",
              "![throughput](throughput.png)", "", "![latency](latency.png)", "",
              "## Summary (the last line the command printed)", "", "```json", json.dumps(s), "```", ""]
    return "\n".join(lines)


def _batching_tables(r: dict, s: dict) -> list[str]:
    """Micro-batching on and off side by side, the reference layout, and Redis's cost per job."""
    lines: list[str] = []
    runs = [(f"INFERQ_BATCH_SIZE={r['batch_size']}, saturation", r["saturation"],
             {"cpu_ms_per_job": r.get("cpu_ms_per_job", {}), **r.get("redis_per_job", {})})]
    if "unbatched" in r:
        runs.append(("INFERQ_BATCH_SIZE=1, same load", r["unbatched"], r["unbatched"]))
    if "reference" in r:
        runs.append((f"reference layout (workers on core 1), INFERQ_BATCH_SIZE={r['batch_size']}",
                     r["reference"], r["reference"]))
    components = list(r.get("cpu_ms_per_job", {}))
    lines += ["", "## Micro-batching, the reference layout and Redis, side by side (one text per job)", "",
              _row("run", "texts/s", "p50 ms", "p99 ms", *(f"CPU ms/job: {c}" for c in components),
                   "Redis commands/job", "Redis CPU ms/job", "jobs per worker"),
              _row(*["---"] * (6 + len(components) + 1))]
    for label, x, cost in runs:
        lines.append(_row(label, f"{x['tps']:.1f}", f"{x['p50_ms']:.1f}", f"{x['p99_ms']:.1f}",
                          *(f"{cost.get('cpu_ms_per_job', {}).get(c, 0):.2f}" for c in components),
                          f"{cost.get('redis_cmds_per_job', 0):.2f}", f"{cost.get('redis_cpu_ms_per_job', 0):.3f}",
                          ", ".join(str(v) for v in x["per_worker"].values())))
    if "bulk" in r and "redis_cmds_per_job" in r["bulk"]:
        b = r["bulk"]
        lines.append(_row(f"bulk jobs of {b['texts_per_job']} texts (per job)", f"{b['tps']:.1f}",
                          f"{b['p50_ms']:.1f}", "", *(f"{b['cpu_ms_per_job'].get(c, 0):.2f}" for c in components),
                          f"{b['redis_cmds_per_job']:.2f}", f"{b['redis_cpu_ms_per_job']:.3f}",
                          ", ".join(str(v) for v in b["per_worker"].values())))
    if "reference" in r:
        ref = r["reference"]
        lines += ["", f"Reference layout: the raw model on core 1 alone runs {ref['raw_one_core_tps']:.1f} texts/s "
                  f"({ref['raw_one_core_cpu_ms_per_text']:.2f} CPU ms per text); inferq's {r['workers']} workers "
                  f"on that core, fed by the API, Redis and the load generator on core 0, run {ref['tps']:.1f}: "
                  f"worker_efficiency {s['worker_efficiency']}."]
    lines += ["", "Redis commands per job count every command Redis ran during the run (INFO commandstats, the "
              "commands inside scripts included, heartbeats and kombu's scans too) over the jobs done; Redis CPU "
              "is its user + system time over the same jobs. docs/capacity.md turns them into a capacity model."]
    return lines


def plots(r: dict, out: Path) -> None:
    """Throughput against concurrency; latency distributions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([x["clients"] for x in r["sweep"]], [x["tps"] for x in r["sweep"]], "o-", label="inferq end to end")
    ax.axhline(r["raw"]["tps"], color="green", linestyle="--", label=f"raw model x{r['workers']}")
    ax.axhline(r["seed"]["tps"], color="red", linestyle=":", label="seed design (5 clients)")
    ax.set_xscale("log")
    ax.set_xlabel("concurrent clients (closed loop)")
    ax.set_ylabel("texts/s")
    ax.set_title(f"Throughput, W={r['workers']}, {r['precision']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / PLOTS[0], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, values in (("inferq, 5 clients", r["seed_load_latencies_ms"]),
                         ("inferq, saturation", r["saturation_latencies_ms"]),
                         ("seed design, 5 clients", r["seed"]["latencies_ms"])):
        if values:
            ax.plot(sorted(values), [i / len(values) for i in range(len(values))], label=name)
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("fraction of jobs")
    ax.set_title("Latency distribution (CDF)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / PLOTS[1], dpi=100)
    plt.close(fig)


def write(r: dict, out: Path) -> dict:
    """Write RESULTS.md, the plots and results.json into out; return the summary."""
    s = summary(r)
    plots(r, out)
    (out / "RESULTS.md").write_text(markdown(r, s))
    slim = {k: v for k, v in r.items() if not k.endswith("latencies_ms")}
    slim["seed"] = {k: v for k, v in r["seed"].items() if k != "latencies_ms"}
    (out / "results.json").write_text(json.dumps(slim, indent=1, default=str))
    return s
