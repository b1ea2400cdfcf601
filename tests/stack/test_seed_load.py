"""The demo's summary: counts, percentiles and jobs per worker from the outcomes it is given."""
from __future__ import annotations

import math
import random

from inferq.stack import seed_load
from inferq.stack.seed_load import Outcome
from inferq.stack.stats import percentile


def test_percentile_interpolates_between_ranks():
    assert percentile([10, 20, 30, 40], 50) == 25
    assert percentile([5], 99) == 5
    assert math.isnan(percentile([], 50))


def test_seed_texts_look_like_the_seeds():
    text = seed_load.seed_text(random.Random(1))
    assert text and text.replace(" ", "").isalpha() and text.islower()


def test_summary_counts_failed_and_lost_jobs():
    model = {"name": "offline:base", "precision": "int8", "weights": "random", "warning": "random weights"}
    outcomes = ([Outcome(f"{i}", "succeeded", 100.0 + i, "w1@h" if i % 2 else "w2@h", model) for i in range(7)]
                + [Outcome("f", "failed"), Outcome("l", "lost"), Outcome(None, "refused")])
    text = seed_load.summary(outcomes, expected=10, elapsed=2.0, threads=5, per_thread=2)
    assert "jobs submitted    9 of 10" in text
    assert "succeeded         7" in text and "failed            1" in text
    assert "lost              2 (refused 1, unfinished 1)" in text
    assert "throughput        3.5 jobs/s" in text
    assert "p50 103.0 ms" in text
    assert "jobs per worker   w1@h 3, w2@h 4" in text
    assert "WARNING           random weights" in text
