"""Profile inferq at saturation with py-spy: where the API and a worker spend their time.

``python -m inferq.bench.profile [--seconds N] [--out DIR]`` starts the services (base
model, default precision), drives them at saturation and records the API's
gunicorn processes and one worker with py-spy (``pip install py-spy``),
writing collapsed stacks and a summary of the hottest functions.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path

from inferq.bench import loadgen, workload
from inferq.bench.services import Services
from inferq.model.loader import resolve
from inferq.settings import ModelSource, current


def record(pid: int, seconds: float, out: Path, subprocesses: bool) -> subprocess.Popen:
    """Start py-spy recording pid for seconds into out (collapsed stacks)."""
    command = [shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid),
               "--duration", str(int(seconds)), "--format", "raw", "--output", str(out), "--nonblocking",
               "--rate", "200", *(["--subprocesses"] if subprocesses else [])]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def summarize(path: Path, top: int = 25) -> str:
    """Self time and total time per function, from collapsed stacks."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        frames = [f.split(" (")[0] + " (" + f.split(" (")[-1] if " (" in f else f for f in stack.split(";")]
        samples += n
        own[frames[-1]] += n
        for f in set(frames):
            total[f] += n
    lines = [f"{path.name}: {samples} samples", "self%  total%  function"]
    for f, n in own.most_common(top):
        lines.append(f"{100 * n / samples:5.1f}  {100 * total[f] / samples:5.1f}  {f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the profile and print the summaries."""
    parser = argparse.ArgumentParser(prog="python -m inferq.bench.profile")
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=tempfile.mkdtemp(prefix="inferq-profile-"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cache = current(ModelSource).cache
    model_dir = resolve("offline:base", cache)
    texts = workload.texts("short", 600)
    services = Services(out, {"INFERQ_MODEL": model_dir, "INFERQ_MODEL_CACHE": cache})
    try:
        services.start_workers(args.workers)
        jobs = 10_000_000
        stop = threading.Event()
        driver = threading.Thread(target=loadgen.closed_loop, daemon=True,
                                  args=(services.url, texts, args.clients, jobs, "profile"), kwargs={"stop": stop})
        driver.start()
        spies = [record(services.api.pid, args.seconds, out / "api.txt", True),
                 record(services.workers[0].pid, args.seconds, out / "worker.txt", False)]
        for spy in spies:
            spy.wait()
        stop.set()
        driver.join(timeout=60)
        for name in ("api.txt", "worker.txt"):
            print(summarize(out / name))
            print()
    finally:
        services.close()
    print(f"collapsed stacks in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
