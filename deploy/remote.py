"""Checks the deploy runs on the orchestrator, where Redis and the API are reachable.

    python -m inferq.deploy.remote ping --expect worker@worker-1-w1,... [--timeout 120] [--at-least 12]
    python -m inferq.deploy.remote status --expect ...
    python -m inferq.deploy.remote smoke --api http://127.0.0.1:5000

Run with the orchestrator's env file loaded (it holds REDIS_URL); prints one
JSON object; exit status 1 when the check fails. Imports nothing of Fabric,
which the hosts do not have.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

PING_TIMEOUT = 1.0
"""Seconds one broadcast ping waits for replies."""


def ping(expected: list[str], timeout: float, at_least: int = 0) -> dict:
    """Ping the workers until every expected node answers, and at least at_least nodes in all (a worker group's
    hosts have names no inventory knows: they are counted), or timeout passes. "short": how many are lacking."""
    from inferq.celery_app import app

    deadline = time.monotonic() + timeout
    while True:
        replies = app.control.ping(timeout=PING_TIMEOUT) or []
        online = sorted(name for reply in replies for name in reply)
        missing = sorted(set(expected) - set(online))
        short = max(0, at_least - len(online))
        if (not missing and not short) or time.monotonic() > deadline:
            return {"online": online, "missing": missing, "short": short}


def queue_depth() -> int:
    """Jobs waiting in the queue, both lanes (not counting the ones workers hold)."""
    from inferq import redislink
    from inferq.contract import lane_queues
    from inferq.settings import RedisLink, current

    settings = current(RedisLink)
    client = redislink.client(settings, settings.broker, socket_timeout=5)
    return sum(client.llen(name) for name in lane_queues(settings.queue).values())


def smoke(api: str, timeout: float) -> dict:
    """Submit one job through the API and wait for its result."""
    import requests

    from inferq.settings import ApiKeys, current

    keys = current(ApiKeys).accepted
    headers = {"X-API-Key": keys[0]} if keys else {}
    posted = requests.post(f"{api}/jobs", json={"text": "inferq deploy smoke test"}, headers=headers, timeout=10)
    posted.raise_for_status()
    job_id = posted.json()["job_id"]
    deadline = time.monotonic() + timeout
    while True:
        job = requests.get(f"{api}/jobs/{job_id}", params={"wait": 5}, headers=headers, timeout=15).json()
        if job.get("status") in ("succeeded", "failed") or time.monotonic() > deadline:
            return {"job_id": job_id, "status": job.get("status"), "worker": job.get("worker", {}).get("hostname")}


def main(argv: list[str] | None = None) -> int:
    """Run one check; print its JSON; 1 if it failed."""
    parser = argparse.ArgumentParser(prog="python -m inferq.deploy.remote")
    parser.add_argument("check", choices=["ping", "status", "smoke"])
    parser.add_argument("--expect", default="", help="comma-separated Celery node names")
    parser.add_argument("--api", default="http://127.0.0.1:5000")
    parser.add_argument("--timeout", type=float, default=0.0)
    parser.add_argument("--at-least", type=int, default=0, help="wait until this many workers answer in all")
    args = parser.parse_args(argv)
    expected = [name for name in args.expect.split(",") if name]
    if args.check == "smoke":
        result = smoke(args.api, args.timeout or 60)
        ok = result["status"] == "succeeded"
    else:
        result = ping(expected, args.timeout, args.at_least)
        ok = not result["missing"] and not result["short"]
        if args.check == "status":
            result["queue_depth"] = queue_depth()
            ok = True
    print(json.dumps(result))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
