"""HTTPS to an API whose certificate is pinned by its SHA-256 fingerprint (a self-signed one, as `fab deploy` makes).

The fingerprint replaces the CA chain: the connection is made only when the
server shows exactly that certificate (urllib3 compares it before a byte of
the request is sent), whatever any CA says, and fails otherwise.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

import requests
from requests import PreparedRequest, Response
from requests.adapters import HTTPAdapter

FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")
"""A SHA-256 fingerprint: 64 hex digits once colons and case are dropped."""


def normalize(fingerprint: str) -> str:
    """64 lowercase hex digits from a fingerprint written with or without colons; ValueError if it is none."""
    plain = fingerprint.replace(":", "").strip().lower()
    if not FINGERPRINT.match(plain):
        raise ValueError(f"{fingerprint!r} is not a SHA-256 certificate fingerprint (64 hex digits)")
    return plain


class PinnedAdapter(HTTPAdapter):
    """An adapter that accepts one certificate, by fingerprint, and no other."""

    def __init__(self, fingerprint: str, **kwargs):
        self.fingerprint = normalize(fingerprint)
        super().__init__(**kwargs)

    def init_poolmanager(self, *args, **kwargs):
        kwargs["assert_fingerprint"] = self.fingerprint
        super().init_poolmanager(*args, **kwargs)

    def send(self, request: PreparedRequest, stream: bool = False,
             timeout: float | tuple[float, float] | tuple[float, None] | None = None, verify: bool | str = True,
             cert: bytes | str | tuple[bytes | str, bytes | str] | None = None,
             proxies: Mapping[str, str] | None = None) -> Response:
        """Send request with the fingerprint as the only check of the certificate."""
        # The fingerprint is the check: no CA chain (a self-signed certificate has none, and
        # REQUESTS_CA_BUNDLE in the environment must not bring one back), whatever verify says.
        return super().send(request, stream=stream, timeout=timeout, verify=False, cert=cert, proxies=proxies)


def pin(session: requests.Session, fingerprint: str) -> requests.Session:
    """Make session's HTTPS requests accept only the certificate with this fingerprint."""
    session.mount("https://", PinnedAdapter(fingerprint))
    return session
