"""Fixtures of the cancellation, priority-lane and callback tests: one private stack for the package.

Workers and the API sign callbacks with SECRET and may call back to 127.0.0.1
(INFERQ_WEBHOOK_ALLOWED_NETWORKS), where the tests' receiver listens; the
workers run with test faults (texts that sleep) and a short visibility timeout.
"""
from __future__ import annotations

import http.server
import json
import secrets
import threading
import time
from collections.abc import Callable

import pytest

from tests.reliability.stack import Stack

SECRET = secrets.token_urlsafe(24)
WEBHOOK_ENV = {"INFERQ_WEBHOOK_SECRET": SECRET, "INFERQ_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8"}


@pytest.fixture(scope="package")
def control(tiny_model, tmp_path_factory):
    """Our Redis, two workers (w1, w2) and an API, callbacks allowed to loopback."""
    s = Stack(tmp_path_factory.mktemp("control-stack"), tiny_model, **WEBHOOK_ENV)
    s.start_redis()
    try:
        s.start_workers(["w1", "w2"])
        s.api = s.start_api()
        yield s
    finally:
        s.stop()


class Receiver:
    """A callback receiver on 127.0.0.1: answers each POST with the next scripted status, records them all."""

    def __init__(self, statuses: list[int], on_request: Callable[[int], None] | None = None):
        self.statuses = list(statuses)
        self.on_request = on_request
        self.requests: list[dict] = []
        self.received = threading.Condition()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.received:
                    number = len(receiver.requests)
                    status = receiver.statuses[min(number, len(receiver.statuses) - 1)]
                    receiver.requests.append({"headers": dict(self.headers), "body": body, "status": status,
                                              "path": self.path, "at": time.monotonic()})
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                self.wfile.flush()
                if receiver.on_request is not None:
                    receiver.on_request(number)
                with receiver.received:
                    receiver.received.notify_all()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/inferq?x=1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait_for(self, count: int, timeout: float) -> list[dict]:
        """Wait until count requests have come (or timeout); return them all."""
        with self.received:
            self.received.wait_for(lambda: len(self.requests) >= count, timeout)
            return list(self.requests)

    def json(self, n: int) -> dict:
        return json.loads(self.requests[n]["body"])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def receiver_factory():
    made: list[Receiver] = []

    def make(statuses: list[int], on_request=None) -> Receiver:
        made.append(Receiver(statuses, on_request))
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()
