"""Interactive behind bulk: how long a single text takes when bulk work fills the queue.

Against a running API: queue ``bulk_texts`` texts of bulk work (jobs of
``texts_per_job`` texts, by default the most the API accepts, in the bulk lane),
then submit ``interactive`` single texts one after another, each waited for
before the next, and report the median and 99th percentile from submit to
result. Workers take the interactive lane first, and a bulk job runs in forward
passes of at most INFERQ_BATCH_SIZE texts with the interactive jobs waiting
taken into a pass of their own between two (tasks/passes.py): a single text
waits for the pass in flight, not for the bulk job, nor for the backlog. The
target: p50 <= 250 ms and p99 <= 1 s behind 10,000 texts in jobs of 256, on two
workers with the base model.

    python -m inferq.bench.priority --api http://127.0.0.1:5000
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import requests

from inferq.stack.stats import percentile

TEXT = "the film was a delight from start to end"


def _lane_depth(session: requests.Session, api_url: str, lane: str) -> int | None:
    """The lane's waiting jobs as /metrics says (None if it cannot be read)."""
    try:
        text = session.get(f"{api_url}/metrics", timeout=5).text
    except requests.RequestException:
        return None
    prefix = f'inferq_lane_queue_depth{{lane="{lane}"}} '
    for line in text.splitlines():
        if line.startswith(prefix):
            return int(float(line[len(prefix):]))
    return None


BULK_TEXTS = 10_240
"""Texts of bulk work queued ahead of the single texts: forty jobs of the API's default largest size."""


def largest_job(api_url: str, api_key: str = "") -> int:
    """The most texts one job may carry, as the API's OpenAPI document says."""
    from inferq.client.api import Client

    limit = Client(api_url, api_key).max_texts_per_job()
    if not limit:
        raise RuntimeError(f"{api_url}/openapi.json does not say how many texts a job may carry")
    return limit


def interactive_behind_bulk(api_url: str, api_key: str = "", bulk_texts: int = BULK_TEXTS,
                            texts_per_job: int | None = None, interactive: int = 30,
                            bulk_text: Callable[[int], str] | None = None, timeout: float = 60.0) -> dict:
    """Queue bulk_texts texts of bulk work, then time `interactive` single-text jobs one after another.

    texts_per_job: the bulk jobs' size (default: the largest the API accepts). bulk_text(i): the i-th
    bulk text (default: a fixed sentence). Returns {"interactive_behind_bulk_p50_ms", "..._p99_ms",
    "..._max_ms", "bulk_jobs", "bulk_waiting_after_each", ...}: the last says how many bulk jobs still
    waited when each single text was done (work it overtook).
    """
    api_url = api_url.rstrip("/")
    texts_per_job = texts_per_job or largest_job(api_url, api_key)
    make = bulk_text or (lambda i: f"{TEXT} ({i})")
    headers = {"X-API-Key": api_key} if api_key else {}
    with requests.Session() as session:
        session.headers.update(headers)
        jobs = [[make(i) for i in range(start, min(start + texts_per_job, bulk_texts))]
                for start in range(0, bulk_texts, texts_per_job)]

        def submit_bulk(texts: list[str]) -> str:
            with requests.Session() as own:
                own.headers.update(headers)
                response = own.post(f"{api_url}/jobs", json={"texts": texts}, timeout=timeout)
                response.raise_for_status()
                return response.json()["job_id"]

        with ThreadPoolExecutor(8) as pool:
            bulk_ids = list(pool.map(submit_bulk, jobs))
        times_ms, waiting, singles = [], [], []
        for i in range(interactive):
            started = time.perf_counter()
            response = session.post(f"{api_url}/jobs", json={"text": f"{TEXT} [{i}]"}, timeout=timeout)
            response.raise_for_status()
            job_id = response.json()["job_id"]
            singles.append(job_id)
            job = session.get(f"{api_url}/jobs/{job_id}", params={"wait": timeout}, timeout=timeout + 10).json()
            elapsed = (time.perf_counter() - started) * 1000
            if job["status"] != "succeeded":
                raise RuntimeError(f"interactive job {job_id} ended {job['status']}: {job}")
            times_ms.append(elapsed)
            waiting.append(_lane_depth(session, api_url, "bulk"))
    return {
        "interactive_behind_bulk_p50_ms": round(statistics.median(times_ms), 1),
        "interactive_behind_bulk_p99_ms": round(percentile(times_ms, 99), 1),
        "interactive_behind_bulk_max_ms": round(max(times_ms), 1),
        "interactive_jobs": interactive,
        "bulk_texts": bulk_texts,
        "texts_per_job": texts_per_job,
        "bulk_jobs": len(bulk_ids),
        "bulk_waiting_after_each": waiting,
        "bulk_job_ids": bulk_ids,
        "interactive_job_ids": singles,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the measurement against a running stack and print it as JSON."""
    from inferq.settings import Client, current

    client = current(Client)
    p = argparse.ArgumentParser(prog="python -m inferq.bench.priority", description=__doc__.split("\n")[0])
    p.add_argument("--api", default=client.url, help="the API's URL (default: INFERQ_API_URL or the bind address)")
    p.add_argument("--api-key", default=client.api_key)
    p.add_argument("--bulk-texts", type=int, default=BULK_TEXTS)
    p.add_argument("--texts-per-job", type=int, default=None, help="default: the most the API accepts")
    p.add_argument("--interactive", type=int, default=30)
    args = p.parse_args(argv)
    result = interactive_behind_bulk(args.api, args.api_key, args.bulk_texts, args.texts_per_job, args.interactive)
    result.pop("bulk_job_ids")
    result.pop("interactive_job_ids")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
