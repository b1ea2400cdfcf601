"""A proxy on loopback in front of a real API that fails requests the way a dying host or its nginx does.

It forwards each request to the API behind it, or fails it: answers 502/503 without forwarding (nginx
without its API), or forwards it and then answers 503 or drops the connection without an answer (the job
was queued, the client cannot know). It records what it saw, so a test can tell which address a request
went to and which job the API behind it created. With a certificate it speaks TLS, as the cluster's nginx.
"""
from __future__ import annotations

import json
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

FORWARD, ANSWER_502, ANSWER_503 = "forward", "502", "503"
FORWARD_THEN_503, FORWARD_THEN_DROP = "forward-then-503", "forward-then-drop"
"""What the proxy does with a request."""

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


@dataclass
class Seen:
    """One request the proxy received, and the job id the API behind it answered with (if any)."""

    method: str
    path: str
    idempotency_key: str | None
    upstream_job_id: str | None = None


@dataclass
class FaultProxy:
    """A proxy to target (a base URL); faults: what to do with the next requests, in order, then default."""

    target: str
    default: str = FORWARD
    faults: list[str] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 0
    tls_files: tuple[Path, Path] | None = None  # (certificate, key) PEM files: speak TLS with them
    _stopped: bool = False

    def start(self) -> FaultProxy:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                seen = Seen(self.command, self.path, self.headers.get("Idempotency-Key"))
                proxy.seen.append(seen)
                mode = proxy.faults.pop(0) if proxy.faults else proxy.default
                if mode in (ANSWER_502, ANSWER_503):
                    self._answer(int(mode), {"error": "api_unavailable", "message": "no API behind this proxy"})
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                answer = requests.request(self.command, proxy.target + self.path, data=body, headers=headers,
                                          timeout=60)
                try:
                    seen.upstream_job_id = answer.json().get("job_id")
                except ValueError:
                    pass
                if mode == FORWARD_THEN_DROP:
                    self.close_connection = True  # no status line, no byte: the connection just ends
                    return
                if mode == FORWARD_THEN_503:
                    self._answer(503, {"error": "api_unavailable", "message": "the API went away mid-request"})
                    return
                self._answer(answer.status_code, answer.content, answer.headers.get("Content-Type"))

            def _answer(self, status: int, body: dict | bytes, content_type: str | None = None) -> None:
                data = json.dumps(body).encode() if isinstance(body, dict) else body
                self.send_response(status)
                self.send_header("Content-Type", content_type or "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _handle

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        if self.tls_files:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self.tls_files)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        return f"{'https' if self.tls_files else 'http'}://{self.host}:{self.port}"

    def stop(self) -> None:
        """Stop listening (again: nothing)."""
        if not self._stopped:
            self._stopped = True
            self._server.shutdown()
            self._server.server_close()


def certificate(folder: Path, name: str, addresses: list[str]):
    """A self-signed certificate for addresses as deploy.tls makes one, written to folder; (cert, key, made)."""
    from inferq.deploy import tls

    made = tls.generate("test", addresses)
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    cert.write_bytes(made.cert_pem)
    key.write_bytes(made.key_pem)
    return cert, key, made
