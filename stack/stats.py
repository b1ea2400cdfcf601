"""The one percentile of measured latencies, for the demo (stack/seed_load.py), the benchmark and the tests."""
from __future__ import annotations

import statistics
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (1-99) by linear interpolation between closest ranks; nan without values."""
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[round(q) - 1]
