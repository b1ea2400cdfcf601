"""``inferq-bench``: raw model, the seed's design and inferq end to end, side by side, in one run.

Prints progress while it runs; writes RESULTS.md and PNG plots into --out;
prints as its last line one JSON object with the headline figures.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from inferq.bench import report, runner
from inferq.settings import PRECISIONS, Worker, load

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plan:
    """How much of everything a run does."""

    model: str
    texts: int
    precision_texts: int
    peak_seconds: float
    raw_seconds: float
    seed_per_client: int
    idle_jobs: int
    seed_load_jobs: int
    saturation_clients: int
    saturation_jobs: int
    sweep: tuple[int, ...]
    sweep_jobs: int
    open_fractions: tuple[float, ...]
    open_seconds: float
    scaling_jobs: int
    squeeze_workers: int
    mixed: bool


FULL = Plan("offline:base", 2000, 300, 5, 30, 20, 100, 2000, 16, 20000, (1, 2, 5, 10, 16, 32), 1000,
            (0.25, 0.5, 0.75, 0.9), 20, 3000, 10, True)
QUICK = Plan("offline:base", 600, 60, 2, 8, 6, 30, 300, 16, 1000, (1, 5, 16), 150,
             (0.25, 0.5, 0.75), 5, 300, 10, False)
SMOKE = Plan("offline:tiny", 40, 10, 0.3, 1, 1, 3, 10, 4, 20, (1, 4), 8, (0.5,), 1, 10, 3, False)
"""SMOKE is for the tests: the tiny model and a handful of jobs; its figures mean nothing."""


def parse(argv: list[str] | None) -> argparse.Namespace:
    defaults = load(Worker)  # the workers' settings of this environment are the defaults
    parser = argparse.ArgumentParser(prog="inferq-bench", description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="a short run (under 5 minutes here)")
    mode.add_argument("--smoke", action="store_true", help="tiny model, a handful of jobs (for tests)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="W (default: cores)")
    parser.add_argument("--workload", choices=("short", "mixed"), default="short")
    parser.add_argument("--precision", default=defaults.precision, choices=PRECISIONS,
                        help="default: INFERQ_PRECISION")
    parser.add_argument("--batch-size", type=int, default=defaults.delivery.batch_size,
                        help="INFERQ_BATCH_SIZE for inferq's workers")
    parser.add_argument("--model", help="INFERQ_MODEL for every path (default offline:base)")
    parser.add_argument("--out", default=str(Path(__file__).parent), help="where RESULTS.md and plots go")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and report."""
    args = parse(argv)
    plan = SMOKE if args.smoke else QUICK if args.quick else FULL
    if args.model:
        plan = replace(plan, model=args.model)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    command = "inferq-bench " + " ".join(sys.argv[1:] if argv is None else argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="inferq-bench-") as tmp:
        results = runner.run(plan, args, Path(tmp))
    results["command"] = command.strip()
    results["machine"] = machine()
    results["mode"] = "smoke" if args.smoke else "quick" if args.quick else "full"
    summary = report.write(results, out)
    print(json.dumps(summary))
    return 0


def machine() -> str:
    """One line about where this ran."""
    import torch

    cpu = platform.processor() or ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, torch {torch.__version__}")
