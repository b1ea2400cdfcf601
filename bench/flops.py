"""Model FLOPs per text, and the matrix-multiply peak of this machine, measured now."""
from __future__ import annotations

import multiprocessing
import time


def encoder_flops(tokens: int, hidden: int, layers: int, ffn: int, num_labels: int = 2) -> float:
    """Multiply-add FLOPs (2 per MAC) of one DistilBERT forward pass over `tokens` tokens."""
    per_layer = (
        4 * 2 * tokens * hidden * hidden      # q, k, v and output projections
        + 2 * 2 * tokens * hidden * ffn       # the two feed-forward matrices
        + 2 * 2 * tokens * tokens * hidden    # scores (QK^T) and the weighted sum of V
    )
    head = 2 * hidden * hidden + 2 * hidden * num_labels  # pre-classifier and classifier, on [CLS]
    return layers * per_layer + head


def text_flops(token_counts: list[int], config) -> float:
    """Total FLOPs the texts need, each run alone (batch 1, no padding)."""
    return sum(encoder_flops(n, config.dim, config.n_layers, config.hidden_dim, config.num_labels)
               for n in token_counts)


def _matmul_rate(seconds: float, size: int, barrier=None) -> float:
    import torch

    torch.set_num_threads(1)
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(3):
        a @ b
    if barrier is not None:
        barrier.wait()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        n += 1
    return 2 * size ** 3 * n / (time.perf_counter() - start)


def _worker(seconds, size, barrier, queue):
    queue.put(_matmul_rate(seconds, size, barrier))


def matmul_peak(processes: int, seconds: float = 3.0, size: int = 1024) -> float:
    """fp32 matmul FLOP/s of `processes` single-threaded processes running at once (summed)."""
    if processes == 1:
        return _matmul_rate(seconds, size)  # here: torch is loaded in this process anyway
    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(processes), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(seconds, size, barrier, queue)) for _ in range(processes)]
    for p in procs:
        p.start()
    rates = [queue.get(timeout=seconds + 120) for _ in procs]
    for p in procs:
        p.join()
    return sum(rates)
