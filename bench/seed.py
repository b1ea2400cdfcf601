"""Run the seed's design (rebuilt in seed_orchestrator and seed_model_server) under the seed's load."""
from __future__ import annotations

import sys
import threading
import time
from functools import partial
from pathlib import Path

import requests

from inferq.stack import processes
from inferq.stack.redis_server import free_port

SEED_CLIENTS = 5
"""The seed's test script: 5 threads, each sending its requests one after the other."""


def start(model_dir: str, containers: int, log_dir: Path) -> tuple[str, list]:
    """Start the containers and the orchestrator; return the orchestrator's URL and the processes."""
    procs, urls = [], []
    for k in range(containers):
        port = free_port()
        log = log_dir / f"seed-container-{k}.log"
        proc = processes.spawn([sys.executable, "-m", "inferq.bench.seed_model_server", model_dir, str(port)], {}, log)
        procs.append(proc)
        urls.append(f"http://127.0.0.1:{port}")
    for proc, url, k in zip(procs, urls, range(containers)):
        processes.wait_until(partial(processes.http_ok, url + "/health"), 300, f"seed container {k}",
                             proc, log_dir / f"seed-container-{k}.log")
    port = free_port()
    log = log_dir / "seed-orchestrator.log"
    orch = processes.spawn([sys.executable, "-m", "inferq.bench.seed_orchestrator", str(port), *urls], {}, log)
    procs.append(orch)
    base = f"http://127.0.0.1:{port}"
    processes.wait_until(lambda: requests.get(base + "/finished", timeout=1).ok, 60, "seed orchestrator", orch, log)
    return base, procs


def run_load(base: str, texts: list[str], per_client: int, progress=lambda n: None) -> dict:
    """5 client threads each post per_client requests; wait for all to finish; return latencies and rate."""
    submitted: dict[int, float] = {}
    lock = threading.Lock()

    def client(k):
        with requests.Session() as session:
            for i in range(per_client):
                text = texts[(k * per_client + i) % len(texts)]
                t = time.time()
                request_id = session.post(base + "/new_request", json={"text": text}, timeout=30).json()["id"]
                with lock:
                    submitted[request_id] = t

    threads = [threading.Thread(target=client, args=(k,)) for k in range(SEED_CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total, seen = len(submitted), 0
    while True:
        finished = {int(k): v for k, v in requests.get(base + "/finished", timeout=10).json().items()}
        progress(len(finished) - seen)
        seen = len(finished)
        if len(finished) >= total:
            break
        time.sleep(0.2)
    latencies = sorted((finished[i] - submitted[i]) * 1000 for i in submitted)
    seconds = max(finished.values()) - min(submitted.values())
    return {"texts": total, "seconds": seconds, "tps": total / seconds, "latencies_ms": latencies}
