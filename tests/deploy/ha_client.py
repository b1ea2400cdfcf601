"""A client of an --ha lab cluster that never pauses, run in the lab's admin namespace by the failover test.

    INFERQ_API_KEY=KEY python -m tests.deploy.ha_client --api URL1,URL2 --pins SHA1,SHA2 --log LOG --stop STOPFILE

It is the inferq client (inferq.client.api.Client) with both orchestrators' addresses, each with its pinned
certificate: it submits one job after another until STOPFILE exists, writing a JSON line per attempt to LOG
(the time, and the job id accepted or the answer that refused it), then waits for every accepted job through
whichever API answers and prints one JSON summary: accepted, succeeded, the ids that never succeeded, and when
each job finished (its worker's finished_at).
The API key comes from the environment, never the command line (the lab checks no secret is on one).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from datetime import datetime
from pathlib import Path

from inferq.client.api import ApiRefused, ApiUnreachable, Client

FINISH_SECONDS = 180
"""How long, after the stop, every accepted job has to succeed."""


def submit_until(client: Client, log: Path, stop: Path) -> list[str]:
    """Submit one job after another until stop exists; the ids accepted."""
    accepted: list[str] = []
    with log.open("a") as out:
        number = 0
        while not stop.exists():
            number += 1
            entry: dict = {"t": time.time()}  # when the submit started; "done": when it was answered
            try:
                job_id = client.submit(f"failover job {number}")
                accepted.append(job_id)
                entry.update(accepted=job_id, via=client.current, done=time.time())
            except ApiRefused as exc:
                entry.update(refused=exc.status, code=exc.code, via=client.current)
                time.sleep(0.2)
            except ApiUnreachable as exc:
                entry.update(unreachable=str(exc)[:200])
                time.sleep(0.2)
            out.write(json.dumps(entry) + "\n")
            out.flush()
    return accepted


def finish(client: Client, accepted: list[str]) -> dict:
    """Wait for every accepted job; the summary."""
    deadline = time.monotonic() + FINISH_SECONDS
    pending = set(accepted)
    failed: dict[str, str] = {}
    finished: dict[str, float] = {}
    while pending and time.monotonic() < deadline:
        for job_id in sorted(pending):
            try:
                job = client.job(job_id, wait=5)
                status = job.get("status")
            except ApiRefused as exc:
                if exc.status == 404:  # the API has no record of a job it accepted: lost
                    failed[job_id] = "unknown (404)"
                    pending.discard(job_id)
                continue
            except ApiUnreachable:
                continue
            if status == "succeeded":
                pending.discard(job_id)
                finished[job_id] = datetime.fromisoformat(job["timings"]["finished_at"]).timestamp()
            elif status in ("failed", "cancelled"):
                failed[job_id] = status
                pending.discard(job_id)
    return {"accepted": len(accepted), "succeeded": len(accepted) - len(pending) - len(failed),
            "lost": sorted(pending) + sorted(failed), "failed": failed, "finished": finished}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.deploy.ha_client")
    parser.add_argument("--api", required=True, help="comma-separated API addresses")
    parser.add_argument("--pins", required=True, help="comma-separated certificate SHA-256s, one per address")
    parser.add_argument("--log", required=True, type=Path)
    parser.add_argument("--stop", required=True, type=Path)
    args = parser.parse_args()
    client = Client(args.api.split(","), os.environ["INFERQ_API_KEY"], timeout=5, cert_sha256=args.pins.split(","))
    accepted = submit_until(client, args.log, args.stop)
    print(json.dumps(finish(client, accepted)))


if __name__ == "__main__":
    main()
