"""The seed's orchestrator, rebuilt: an in-memory queue, a semaphore of free containers, a lock per container.

Faithful to the lab report: ``/new_request`` puts the request in a queue and
answers 200 at once; a consume loop takes a request, acquires the semaphore,
tests each container's lock until it finds a free one (busy-polling, as the
report's logs show), locks it and starts a thread that forwards the request
over HTTP, then releases the lock and the semaphore.

The one addition (the seed gave its clients no way to learn this): each
request gets an id, and the forwarding thread records when it finished, which
``GET /finished`` returns so the benchmark can compute latency and throughput.
Run: ``python -m inferq.bench.seed_orchestrator PORT CONTAINER_URL...``.
"""
from __future__ import annotations

import itertools
import queue
import sys
import threading
import time

import requests
from flask import Flask, jsonify, request


def create_app(container_urls: list[str]) -> Flask:
    """The orchestrator of the seed, forwarding to the given container URLs."""
    app = Flask(__name__)
    requests_queue: queue.Queue = queue.Queue()
    free = threading.Semaphore(len(container_urls))
    locks = {i: threading.Lock() for i in range(len(container_urls))}
    finished: dict[int, float] = {}  # the addition: request id -> completion time
    ids = itertools.count()

    def send(container_id: int, request_id: int, text: str) -> None:
        try:
            requests.post(container_urls[container_id] + "/run_model", json={"input": text}, timeout=600)
        finally:
            finished[request_id] = time.time()
            locks[container_id].release()
            free.release()

    def consume() -> None:
        while True:
            request_id, text = requests_queue.get()
            free.acquire()
            while True:  # the seed's loop: test every container until one is free
                for container_id, lock in locks.items():
                    if lock.acquire(blocking=False):
                        threading.Thread(target=send, args=(container_id, request_id, text), daemon=True).start()
                        break
                else:
                    continue
                break

    threading.Thread(target=consume, daemon=True).start()

    @app.post("/new_request")
    def new_request():
        request_id = next(ids)
        requests_queue.put((request_id, request.get_json()["text"]))
        return jsonify(message="Request received and enqueued", id=request_id)

    @app.get("/finished")
    def get_finished():
        return jsonify({str(k): v for k, v in finished.items()})

    return app


def main() -> None:
    """Serve the orchestrator on 127.0.0.1:PORT with Flask's own server, as the seed did."""
    port, urls = int(sys.argv[1]), sys.argv[2:]
    create_app(urls).run(host="127.0.0.1", port=port, threaded=True)


if __name__ == "__main__":
    main()
