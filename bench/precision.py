"""The inference paths side by side: speed, and agreement with fp32 on the same texts."""
from __future__ import annotations

import multiprocessing
import time

from inferq.settings import PRECISIONS


def _measure(model_dir, cache, precisions, texts, queue):
    from inferq.model.inference import classify
    from inferq.model.loader import load

    for precision in precisions:
        loaded = load(model_dir, cache, precision, torch_threads=1)
        classify(loaded, texts[:3])
        start = time.perf_counter()
        results = [classify(loaded, [t])[0] for t in texts]  # batch 1, as a worker sees single-text jobs
        elapsed = time.perf_counter() - start
        queue.put((precision, len(texts) / elapsed, results))
        del loaded


def compare(model_dir: str, cache: str, texts: list[str], precisions=PRECISIONS) -> list[dict]:
    """For each path (one thread, in one spawned process): texts/s, label agreement and max |dp| vs fp32."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_measure, args=(model_dir, cache, list(precisions), texts, queue))
    proc.start()
    measured = {}
    for _ in precisions:
        precision, tps, results = queue.get(timeout=1800)
        measured[precision] = (tps, results)
    proc.join()
    reference = measured["fp32"][1]
    margin = fp32_margin(reference)
    rows = []
    for precision, (tps, results) in measured.items():
        agree = sum(a["label"] == b["label"] for a, b in zip(results, reference)) / len(texts)
        diff = max(abs(a["probabilities"][k] - b["probabilities"][k])
                   for a, b in zip(results, reference) for k in a["probabilities"])
        rows.append({"precision": precision, "tps": tps, "agreement": agree, "texts": len(texts),
                     "max_prob_diff": diff, "fp32_median_margin": margin})
    return rows


def fp32_margin(texts_results: list[dict]) -> float:
    """Median distance of fp32's top probability from a coin toss: how easily a label can flip."""
    margins = sorted(max(r["probabilities"].values()) - 0.5 for r in texts_results)
    return margins[len(margins) // 2]
