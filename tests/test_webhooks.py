"""The callback rules without processes: URL shapes, which addresses are blocked, the signature, the backoff."""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import random

import pytest

from inferq import webhooks


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body():
    body = b'{"job_id":"abc","status":"succeeded"}'
    header = webhooks.signature("s" * 20, body, timestamp=1700000000)
    expected = hmac.new(b"s" * 20, b"1700000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"
    fresh = webhooks.signature("s" * 20, body)
    assert webhooks.verify("s" * 20, body, fresh)
    assert not webhooks.verify("s" * 20, body + b" ", fresh)
    assert not webhooks.verify("t" * 20, body, fresh)
    assert not webhooks.verify("s" * 20, body, header)  # too old
    assert not webhooks.verify("s" * 20, body, "garbage")


@pytest.mark.parametrize("address,allowed,blocked", [
    ("8.8.8.8", "", False),
    ("2606:4700:4700::1111", "", False),
    ("127.0.0.1", "", True),
    ("127.0.0.1", "127.0.0.0/8", False),
    ("::1", "127.0.0.0/8", True),
    ("10.0.0.1", "", True),
    ("100.64.0.1", "", True),  # carrier-grade NAT: not public
    ("169.254.169.254", "", True),
    ("fd00:ec2::254", "", True),
    ("fe80::1", "", True),
    ("::ffff:10.0.0.1", "", True),
    ("224.0.0.1", "", True),
    ("0.0.0.0", "", True),
])
def test_blocked_addresses(address, allowed, blocked):
    nets = webhooks.networks([allowed] if allowed else [])
    assert webhooks.blocked(ipaddress.ip_address(address), nets) is blocked


@pytest.mark.parametrize("url", ["", "http://", "ftp://x/", "javascript:alert(1)", "http://a b/", "http://é.com/",
                                 "http://u:p@x.com/", "http://x.com/#f", "http://x.com:0/", "x" * 3000, None, 5])
def test_malformed_urls(url):
    with pytest.raises(webhooks.InvalidCallbackUrl):
        webhooks.parse(url)


def test_a_url_is_parsed_into_what_a_delivery_needs():
    target = webhooks.parse("https://hooks.example.com:8443/inferq?a=1")
    assert target == webhooks.Target("https", "hooks.example.com", 8443, "/inferq?a=1", "hooks.example.com:8443")
    assert webhooks.parse("http://[2001:db8::1]").port == 80


def test_backoff_doubles_with_jitter_and_is_capped():
    from inferq.tasks.callbacks import MAX_DELAY, backoff

    rng = random.Random(1)
    delays = [backoff(n, rng) for n in range(1, 30)]
    assert 0.5 <= delays[0] <= 1.0 and 1.0 <= delays[1] <= 2.0 and 2.0 <= delays[2] <= 4.0
    assert max(delays) <= MAX_DELAY


def test_a_delivery_connects_to_the_address_it_checked_and_verifies_tls(tmp_path, monkeypatch):
    """callbacks.post: HTTPS to the pinned address, the certificate checked for the URL's host."""
    import http.server
    import ssl
    import threading

    from inferq.deploy import tls
    from inferq.tasks.callbacks import post

    cert = tls.generate("callback-test", ["127.0.0.1"])
    (tmp_path / "cert.pem").write_bytes(cert.cert_pem)
    (tmp_path / "key.pem").write_bytes(cert.key_pem)
    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            seen.append((self.headers["Host"], self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        target = webhooks.parse(f"https://127.0.0.1:{server.server_address[1]}/hook")
        with pytest.raises(ssl.SSLCertVerificationError):  # not a CA this machine trusts
            post(target, "127.0.0.1", b"{}", {}, 5)
        monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "cert.pem"))
        assert post(target, "127.0.0.1", b'{"a":1}', {"Content-Type": "application/json"}, 5) == 204
        assert seen[-1] == (f"127.0.0.1:{server.server_address[1]}", b'{"a":1}')
        with pytest.raises(OSError):  # the address given, not the URL's: nothing listens on 127.0.0.2
            post(target, "127.0.0.2", b"{}", {}, 5)
    finally:
        server.shutdown()
        server.server_close()
