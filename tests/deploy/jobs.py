"""Jobs through the lab's API, from inside its admin namespace: ``python -m tests.deploy.jobs API SHA256 ...``.

    INFERQ_API_KEY=KEY python -m tests.deploy.jobs https://10.231.0.11 SHA256 --count 40 --hold 0.3
    INFERQ_API_KEY=KEY python -m tests.deploy.jobs https://10.231.0.11 SHA256 --until STOPFILE --hold 0.3

The API is the public port: TLS, its certificate pinned by SHA256 (the cluster's fingerprint). The API
key comes from the environment, as the inferq client's does, never from the command line: the tests
check that no secret is on any command line of the lab's machine while they run.

Submits texts that hold their worker `hold` seconds (test fault injection), so
jobs spread over every worker; waits for each; prints one JSON list of
{"status", "worker"}. With --until, keeps submitting one job at a time until
STOPFILE exists: a steady load while the cluster is being updated.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import requests

from inferq.client.pinning import pin
from inferq.settings import Client, load
from inferq.tasks.faults import SLEEP_PREFIX


def finish(http: requests.Session, api: str, job_id: str) -> dict:
    """Wait for one job; its status and the worker that ran it."""
    job = {}
    for _ in range(12):
        job = http.get(f"{api}/jobs/{job_id}", params={"wait": 10}, timeout=20).json()
        if job.get("status") in ("succeeded", "failed"):
            break
    return {"status": job.get("status"), "worker": job.get("worker", {}).get("hostname")}


def main(argv: list[str] | None = None) -> int:
    """Submit, wait, print the outcomes."""
    parser = argparse.ArgumentParser(prog="python -m tests.deploy.jobs")
    parser.add_argument("api")
    parser.add_argument("cert_sha256")
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--until", default="")
    parser.add_argument("--hold", type=float, default=0.3)
    args = parser.parse_args(argv)
    text = f"{SLEEP_PREFIX}{args.hold}"
    outcomes = []
    with pin(requests.Session(), args.cert_sha256) as http:
        http.headers["X-API-Key"] = load(Client).api_key
        post = lambda: http.post(f"{args.api}/jobs", json={"text": text}, timeout=10).json()["job_id"]  # noqa: E731
        if args.count:
            ids = [post() for _ in range(args.count)]
            outcomes = [finish(http, args.api, job_id) for job_id in ids]
        while args.until and not Path(args.until).exists():
            outcomes.append(finish(http, args.api, post()))
    print(json.dumps(outcomes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
