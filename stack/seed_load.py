"""The seed's own test, through the API: client threads each sending requests, then every result awaited.

The seed's script started 5 threads that each sent 10 requests of random
letters to ``/new_request`` and never saw a result. Here each thread sends
its requests the same way, then waits for every one of them, so the summary
can say what happened to each job.
"""
from __future__ import annotations

import random
import string
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from inferq.client.api import ApiRefused, Client
from inferq.stack.stats import percentile

SEED_THREADS = 5
SEED_REQUESTS_PER_THREAD = 10
"""The seed's test: 5 threads x 10 requests."""


def seed_text(rng: random.Random) -> str:
    """A text like the seed's: a few 'words' of random lowercase letters."""
    return " ".join("".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 14)))
                    for _ in range(rng.randint(2, 8)))


@dataclass
class Outcome:
    """What became of one submitted request."""

    job_id: str | None
    status: str  # succeeded, failed, refused, lost (never finished in time)
    latency_ms: float | None = None
    worker: str | None = None
    model: dict | None = None


def run(client: Client, threads: int = SEED_THREADS, per_thread: int = SEED_REQUESTS_PER_THREAD,
        timeout: float = 120.0, on_done: Callable[[Outcome], None] = lambda _: None,
        seed: int = 0) -> tuple[list[Outcome], float]:
    """Run the seed's test; return every request's outcome and the wall time from first send to last result."""
    outcomes: list[Outcome] = []
    lock = threading.Lock()

    def finish(outcome: Outcome) -> None:
        with lock:
            outcomes.append(outcome)
        on_done(outcome)

    def client_thread(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        job_ids = []
        for _ in range(per_thread):
            try:
                job_ids.append(client.submit_seed(seed_text(rng)))
            except ApiRefused as exc:
                finish(Outcome(None, "refused", model={"error": exc.code}))
        for job_id in job_ids:
            try:
                body = client.wait(job_id, timeout)
            except ApiRefused:
                body = {"status": "lost"}
            status = body.get("status")
            if status not in ("succeeded", "failed"):
                status = "lost"
            worker = body.get("worker") or {}
            finish(Outcome(job_id, status, (body.get("timings") or {}).get("total_ms"),
                           worker.get("hostname"), body.get("model")))

    started = time.perf_counter()
    pool = [threading.Thread(target=client_thread, args=(i,), name=f"seed-client-{i}") for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return outcomes, time.perf_counter() - started


def summary(outcomes: list[Outcome], expected: int, elapsed: float, threads: int, per_thread: int) -> str:
    """The demo's summary, as printed."""
    counts = Counter(o.status for o in outcomes)
    succeeded = [o for o in outcomes if o.status == "succeeded"]
    latencies = [o.latency_ms for o in succeeded if o.latency_ms is not None]
    per_worker = Counter(o.worker for o in succeeded)
    lost = expected - counts["succeeded"] - counts["failed"]
    model = next((o.model for o in succeeded if o.model), None) or {}
    lines = [
        "demo summary",
        f"  jobs submitted    {expected - counts['refused']} of {expected} "
        f"({threads} client threads x {per_thread} requests, POST /new_request)",
        f"  succeeded         {counts['succeeded']}",
        f"  failed            {counts['failed']}",
        f"  lost              {lost} (refused {counts['refused']}, unfinished {counts['lost']})",
        f"  wall time         {elapsed:.2f} s (first request sent to last result received)",
        f"  throughput        {len(succeeded) / elapsed:.1f} jobs/s" if elapsed > 0 else "  throughput        -",
        "  latency           " + ", ".join(f"p{q} {percentile(latencies, q):.1f} ms" for q in (50, 95, 99))
        + " (submitted to result stored)",
        "  jobs per worker   " + (", ".join(f"{w} {n}" for w, n in sorted(per_worker.items())) or "-"),
    ]
    if model:
        lines.append(f"  model             {model.get('name')} "
                     f"({model.get('precision')}, {model.get('weights')} weights)")
        if model.get("warning"):
            lines.append(f"  WARNING           {model['warning']}")
    return "\n".join(lines)
