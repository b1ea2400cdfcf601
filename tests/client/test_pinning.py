"""The client over HTTPS to an API whose self-signed certificate it pins by fingerprint.

A TLS server on loopback (Python's ssl with the certificate deploy.tls makes
for a cluster) stands in for the cluster's nginx, which tests/deploy checks.
"""
from __future__ import annotations

import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from inferq.deploy import tls
from tests.client.test_cli import inferq

JOB = "0" * 32


class Jobs(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"job_id": JOB, "status": "queued", "texts": 1, "timings": {}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def https_api(tmp_path_factory):
    """An HTTPS server on loopback with a freshly made self-signed certificate; (URL, its fingerprint)."""
    made = tls.generate("test", ["127.0.0.1"])
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(made.cert_pem)
    (folder / "key.pem").write_bytes(made.key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    server = ThreadingHTTPServer(("127.0.0.1", 0), Jobs)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"https://127.0.0.1:{server.server_address[1]}", made.sha256
    server.shutdown()


def test_the_pinned_certificate_is_accepted_with_or_without_colons(https_api):
    url, fingerprint = https_api
    for pin in (fingerprint, ":".join(fingerprint[i:i + 2] for i in range(0, 64, 2)).upper()):
        run = inferq("--api-cert-sha256", pin, "status", JOB, api=url)
        assert run.returncode == 0 and run.stdout.strip() == f"{JOB} queued", run.stderr


def test_another_certificate_or_none_pinned_is_refused_in_one_line(https_api):
    url, _ = https_api
    other = tls.generate("test", ["127.0.0.1"]).sha256
    wrong = inferq("--api-cert-sha256", other, "status", JOB, api=url)
    assert wrong.returncode == 3 and wrong.stderr.count("\n") == 1, wrong.stderr
    assert "its TLS certificate is not the pinned one" in wrong.stderr
    unpinned = inferq("status", JOB, api=url)  # the system's CAs do not vouch for a self-signed certificate
    assert unpinned.returncode == 3 and "pin it with INFERQ_API_CERT_SHA256" in unpinned.stderr
    bad = inferq("--api-cert-sha256", "abc", "status", JOB, api=url)
    assert bad.returncode == 2 and "is not a SHA-256 certificate fingerprint" in bad.stderr
