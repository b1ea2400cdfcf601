"""Fill the lab's Redis through its public API: ``INFERQ_API_KEY=KEY python -m tests.deploy.fill API SHA256``.

The API key comes from the environment, never from the command line (no secret on any command line).

Every worker is first given a job that holds it `hold` seconds (test fault
injection), so what follows stays queued; then large texts are submitted
until the API has refused five (or MAX_SUBMITS went out); then every
accepted job is waited for. Prints one JSON object: the status codes in
order, and each accepted job's final status.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import requests

from inferq.client.pinning import pin
from inferq.settings import Client, load
from inferq.tasks.faults import SLEEP_PREFIX

TEXT_BYTES = 300_000
"""One job's text: large enough that a few dozen fill a small Redis, small enough for the API's 1 MiB body limit."""

MAX_SUBMITS = 400
"""Bound on the filling loop (a Redis that never fills fails the test instead of running forever)."""


def text(n: int) -> str:
    words = ["redis", "memory", "queue", "limit", "accepted", "never", "lost", f"job{n}"]
    return " ".join(words[(n + i) % len(words)] for i in range(TEXT_BYTES // 6))[:TEXT_BYTES]


def wait_for(http: requests.Session, api: str, job_id: str, until: tuple[str, ...], seconds: float) -> str:
    """Poll a job until its status is one of until (or seconds pass); its last status."""
    deadline = time.monotonic() + seconds
    status = ""
    while time.monotonic() < deadline:
        status = http.get(f"{api}/jobs/{job_id}", params={"wait": 5}, timeout=30).json().get("status", "")
        if status in until:
            break
        if status == "queued" and "running" in until:
            time.sleep(0.2)
    return status


def main(argv: list[str] | None = None) -> int:
    """Hold the workers, fill, wait; print the outcome."""
    parser = argparse.ArgumentParser(prog="python -m tests.deploy.fill")
    parser.add_argument("api")
    parser.add_argument("cert_sha256")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--hold", type=float, default=45)
    args = parser.parse_args(argv)
    with pin(requests.Session(), args.cert_sha256) as http:
        http.headers["X-API-Key"] = load(Client).api_key
        holds, held = [], []
        # One at a time, each running before the next is sent: a worker takes the jobs waiting behind
        # its own into its batch (micro-batching), and the holds must be on as many workers.
        for _ in range(args.workers):
            holds.append(http.post(f"{args.api}/jobs", json={"text": f"{SLEEP_PREFIX}{args.hold}"},
                                   timeout=30).json()["job_id"])
            held.append(wait_for(http, args.api, holds[-1], ("running", "succeeded", "failed"), 60))
        codes, accepted = [], list(holds)
        while codes.count(429) < 5 and len(codes) < MAX_SUBMITS:
            answer = http.post(f"{args.api}/jobs", json={"text": text(len(codes))}, timeout=60)
            codes.append(answer.status_code)
            if answer.status_code == 202:
                accepted.append(answer.json()["job_id"])
            elif answer.status_code == 429 and codes.count(429) == 1:
                refusal = answer.json() | {"retry_after": answer.headers.get("Retry-After")}
        finals = [wait_for(http, args.api, job, ("succeeded", "failed"), 600) for job in accepted]
    print(json.dumps({"held": held, "codes": codes, "accepted": len(accepted), "finals": finals,
                      "refusal": refusal if 429 in codes else None}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
