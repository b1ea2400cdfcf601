"""HTTPS to an API whose certificate is pinned by its SHA-256 fingerprint (a self-signed one, as `fab deploy` makes).

The fingerprint replaces the CA chain: the connection is made only when the
server shows exactly that certificate (urllib3 compares it before a byte of
the request is sent), whatever any CA says, and fails otherwise.
"""
from __future__ import annotations

import re

import requests
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

    def send(self, request, **kwargs):
        # The fingerprint is the check: no CA chain (a self-signed certificate has none, and
        # REQUESTS_CA_BUNDLE in the environment must not bring one back).
        kwargs["verify"] = False
        return super().send(request, **kwargs)


def pin(session: requests.Session, fingerprint: str) -> requests.Session:
    """Make session's HTTPS requests accept only the certificate with this fingerprint."""
    session.mount("https://", PinnedAdapter(fingerprint))
    return session
