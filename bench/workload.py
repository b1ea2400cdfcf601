"""Seeded synthetic workloads: texts built from the words of the model builder's corpus."""
from __future__ import annotations

import gzip
import random
from functools import lru_cache

from inferq.model.builder import CORPUS

WORKLOADS = ("short", "mixed")
"""short: 5-40 words per text; mixed: 80% short, 20% of 150-400 words."""

SHORT_WORDS = (5, 40)
LONG_WORDS = (150, 400)
LONG_SHARE = 0.2
"""Share of long texts in the mixed workload."""


@lru_cache(maxsize=1)
def vocabulary() -> tuple[str, ...]:
    """Words of the corpus, so that texts tokenize like prose rather than noise."""
    with gzip.open(CORPUS, "rt", encoding="utf-8") as f:
        words = [w.strip(".,;:()[]'\"`") for w in f.read().split()]
    return tuple(w for w in words if w.isalpha())


def texts(workload: str, n: int, seed: int = 0) -> list[str]:
    """n texts of the named workload, the same for the same seed."""
    if workload not in WORKLOADS:
        raise ValueError(f"unknown workload {workload!r}: choose one of {', '.join(WORKLOADS)}")
    rng = random.Random(f"{workload}:{seed}")
    words = vocabulary()
    out = []
    for _ in range(n):
        low, high = LONG_WORDS if workload == "mixed" and rng.random() < LONG_SHARE else SHORT_WORDS
        out.append(" ".join(rng.choice(words) for _ in range(rng.randint(low, high))))
    return out
