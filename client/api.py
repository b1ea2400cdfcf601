"""A small HTTP client of inferq's API: submit jobs, read them back, wait for results.

Only requests: no Flask, no torch, so it installs anywhere a client runs.
"""
from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import requests

from inferq.client import pinning

TERMINAL = ("succeeded", "failed", "cancelled")
"""Statuses after which a job never changes."""

MAX_POLL_SECONDS = 30.0
"""Longest single ?wait= the client asks for (the API cuts longer ones to its own maximum)."""

MAX_BUSY_RETRIES = 20
"""How often a submit answered 429 (queue full) or 502/503/504 by every address is retried, honouring
Retry-After."""


class ApiUnreachable(Exception):
    """Nothing answers at the API's addresses (refused, timed out, bad host, connection dropped)."""


class CertificateRefused(ApiUnreachable):
    """An address answered with a TLS certificate that is not its pinned one (or, unpinned, one no CA vouches
    for). A security failure, not an outage: the client stops there and does not try the next address."""


class ApiRefused(Exception):
    """The API answered with an error: its stable code and its message."""

    def __init__(self, status: int, code: str, message: str, retry_after: float | None = None):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message
        self.retry_after = retry_after


FAILOVER_STATUSES = (502, 503, 504)
"""Answers after which the next address is tried: a proxy without its API, an API without its Redis, a gateway
timeout. Any other answer (2xx, 4xx, 500) is the API's word on the request and is final."""


BUSY_STATUSES = (429, *FAILOVER_STATUSES)
"""Answers after which a submit waits (Retry-After) and tries again, with the same Idempotency-Key."""


def new_idempotency_key() -> str:
    """A fresh Idempotency-Key for one submit: a random UUID, 32 hex digits."""
    return uuid.uuid4().hex


@dataclass(frozen=True)
class Address:
    """One of the API's base URLs, with the SHA-256 fingerprint of its pinned certificate ("": none pinned)."""

    url: str
    cert_sha256: str = ""


def _items(values: str | Sequence[str], keep_empty: bool) -> list[str]:
    """Values given as a comma-separated string, a list, or a list of comma-separated strings, flattened."""
    given = [values] if isinstance(values, str) else list(values)
    items = [item.strip() for value in given for item in value.split(",")]
    if keep_empty:
        return [] if items == [""] or not items else items
    return [item for item in items if item]


def addresses(urls: str | Sequence[str], cert_sha256: str | Sequence[str] = "") -> list[Address]:
    """Pair the API's base URLs with their pinned fingerprints, by position; ValueError saying what to fix.

    urls: one or more base URLs (a comma-separated string or a list). cert_sha256: no fingerprint (no pin),
    one fingerprint for every address (one certificate naming them all), or one per address in the same order,
    an empty one for an address without a pin ("fp1,,fp3").
    """
    bases = [url.rstrip("/") for url in _items(urls, keep_empty=False)]
    if not bases:
        raise ValueError("no API address given")
    pins = [pinning.normalize(pin) if pin else "" for pin in _items(cert_sha256, keep_empty=True)]
    if len(pins) == 1:
        pins = pins * len(bases)
    elif not pins:
        pins = [""] * len(bases)
    elif len(pins) != len(bases):
        raise ValueError(f"{len(pins)} certificate fingerprints for {len(bases)} API addresses: give one per "
                         "address, in the same order (empty for an address without a pin), or one for all")
    return [Address(url, pin) for url, pin in zip(bases, pins, strict=True)]


class Client:
    """inferq's API at one or more addresses; safe to share between threads (one HTTP session per thread and
    address).

    With several addresses (APIs sharing one Redis: a second orchestrator), a request goes to the address that
    answered last; one that cannot be reached, drops the connection, times out or answers 502/503/504 sends the
    request on to the next, in order. A certificate that is not the pinned one stops the request there
    (CertificateRefused). Submits carry an Idempotency-Key, the same on every try, so a submit the first
    address accepted but did not confirm is not queued twice by the next.
    """

    def __init__(self, base_url: str | Sequence[str], api_key: str = "", timeout: float = 10.0,
                 cert_sha256: str | Sequence[str] = ""):
        # cert_sha256: the API's certificate fingerprint(s), pinned (a deployed cluster's self-signed one);
        # see addresses() for how they pair with the URLs.
        self.addresses = addresses(base_url, cert_sha256)
        self.base_url = self.addresses[0].url
        self.timeout = timeout
        self.headers = {"X-API-Key": api_key} if api_key else {}
        self._current = 0  # the address that answered last: requests go there first (shared by all threads)
        self._local = threading.local()

    @property
    def current(self) -> str:
        """The base URL requests go to first: the one that answered last."""
        return self.addresses[self._current].url

    def _session(self, index: int) -> requests.Session:
        if not hasattr(self._local, "sessions"):
            self._local.sessions = {}
        sessions: dict[int, requests.Session] = self._local.sessions
        if index not in sessions:
            session = sessions[index] = requests.Session()
            session.headers.update(self.headers)
            if self.addresses[index].cert_sha256:
                pinning.pin(session, self.addresses[index].cert_sha256)
        return sessions[index]

    def _request(self, method: str, path: str, timeout: float | None = None, **kwargs) -> dict:
        """One request, to the current address, else to each next one in turn (see the class); its JSON body."""
        waited = timeout or self.timeout
        first, count = self._current, len(self.addresses)
        failures: list[str] = []
        unavailable: tuple[int, requests.Response] | None = None
        for step in range(count):
            index = (first + step) % count
            base = self.addresses[index].url
            try:
                response = self._session(index).request(method, base + path, timeout=waited, **kwargs)
            except requests.exceptions.SSLError as exc:
                reason = _reason(exc)
                if _certificate_refused(exc):
                    raise CertificateRefused(f"the API at {base}: {reason}"
                                             + ("; the other addresses were not tried" if count > 1 else "")
                                             ) from None
                failures.append(f"{base} ({reason})")
                continue
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
                failures.append(f"{base} ({_reason(exc)})")
                continue
            except requests.Timeout:
                failures.append(f"{base} (no answer within {waited:g}s)")
                continue
            if response.status_code in FAILOVER_STATUSES:
                failures.append(f"{base} (answered {response.status_code})")
                unavailable = (index, response)
                continue
            self._current = index
            return _body(response)
        if unavailable is not None:
            # Every address failed, one of them with an answer: its error (a submit waits it out and retries),
            # and that address first next time, as the one known to answer.
            self._current = unavailable[0]
            return _body(unavailable[1])
        if count == 1:
            raise ApiUnreachable(f"cannot reach the API at {failures[0]}")
        raise ApiUnreachable(f"cannot reach the API at any of its {count} addresses: {'; '.join(failures)}")

    def submit(self, texts: str | list[str]) -> str:
        """Queue one text (str) or a bulk job (list); return the job id. Waits out 429/503 a bounded number of times."""
        return self._submit(texts, 0)["job_id"]

    def submit_and_wait(self, texts: str | list[str], timeout: float) -> dict:
        """Queue a job and return its state once finished or after timeout seconds.

        One HTTP round trip when the job is done within the API's longest wait
        (POST /jobs?wait=N); long-polls after that.
        """
        deadline = time.monotonic() + timeout
        body = self._submit(texts, min(MAX_POLL_SECONDS, timeout))
        if body.get("status") in TERMINAL or deadline - time.monotonic() <= 0:
            return body
        return self.wait(body["job_id"], deadline - time.monotonic())

    def _submit(self, texts: str | list[str], wait: float) -> dict:
        payload = {"text": texts} if isinstance(texts, str) else {"texts": texts}
        params = {"wait": f"{wait:g}"} if wait > 0 else {}
        # One key for every try of this submit, on any address: the API gives a retry the job an earlier try
        # queued (the APIs share one Redis), and a refused try (429, 503) released it for the next.
        headers = {"Idempotency-Key": new_idempotency_key()}
        for attempt in range(MAX_BUSY_RETRIES + 1):
            try:
                return self._request("POST", "/jobs", json=payload, params=params, headers=headers,
                                     timeout=self.timeout + wait)
            except ApiRefused as exc:
                retried = exc.status in BUSY_STATUSES
                if not retried or attempt == MAX_BUSY_RETRIES:
                    raise
                time.sleep(min(10.0, exc.retry_after or 0.2 * (attempt + 1)))
        raise AssertionError("unreachable")

    def max_texts_per_job(self) -> int | None:
        """The most texts one job may carry, from the API's OpenAPI document (None if it does not say)."""
        try:
            document = self._request("GET", "/openapi.json")
            schema = document["components"]["schemas"]["JobRequest"]
            # texts is a property of the schema itself; the earlier hand-written document had it in each oneOf option.
            for option in [schema, *schema.get("oneOf", [])]:
                texts = option.get("properties", {}).get("texts")
                if texts and "maxItems" in texts:
                    return int(texts["maxItems"])
        except (ApiRefused, LookupError, TypeError, ValueError):
            pass
        return None

    def submit_seed(self, text: str) -> str:
        """Queue one text through the seed's route, POST /new_request, as the seed's clients do; return the job id."""
        return self._request("POST", "/new_request", json={"text": text},
                             headers={"Idempotency-Key": new_idempotency_key()})["job_id"]

    def job(self, job_id: str, wait: float = 0) -> dict:
        """The job's current state; with wait, held by the API until it finishes or wait seconds pass."""
        params = {"wait": f"{wait:g}"} if wait > 0 else {}
        return self._request("GET", f"/jobs/{job_id}", params=params, timeout=self.timeout + wait)

    def wait(self, job_id: str, timeout: float) -> dict:
        """Long-poll until the job is finished or timeout seconds pass; return its last state."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            body = self.job(job_id, wait=max(0.0, min(MAX_POLL_SECONDS, remaining)))
            if body.get("status") in TERMINAL or deadline - time.monotonic() <= 0:
                return body

    def cancel(self, job_id: str) -> dict:
        """DELETE /jobs/<id>: {"job_id", "status": "cancelled" | "cancel_requested"} (409 job_finished if done)."""
        return self._request("DELETE", f"/jobs/{job_id}")

    def ready(self) -> dict:
        """GET /readyz: how many workers are consuming (raises ApiRefused when none)."""
        return self._request("GET", "/readyz")


def _body(response: requests.Response) -> dict:
    """An answer's JSON body; ApiRefused for an error status."""
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.status_code >= 400:
        raise ApiRefused(response.status_code, body.get("error", "http_error"),
                         body.get("message", response.reason or "error"),
                         _seconds(response.headers.get("Retry-After")))
    return body


def _certificate_refused(exc: requests.exceptions.SSLError) -> bool:
    """Whether a TLS failure is the certificate's (not the pinned one, or unpinned and no CA vouches for it),
    rather than a connection cut during the handshake."""
    text = str(exc)
    return "Fingerprints did not match" in text or "CERTIFICATE_VERIFY_FAILED" in text


def _seconds(raw: str | None) -> float | None:
    try:
        return max(0.0, float(raw)) if raw else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


def _reason(exc: requests.RequestException) -> str:
    text = str(exc)
    if "Fingerprints did not match" in text:
        return "its TLS certificate is not the pinned one: check INFERQ_API_CERT_SHA256, and who answers there"
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return "its TLS certificate is not one a CA vouches for: pin it with INFERQ_API_CERT_SHA256"
    for hint in ("Connection refused", "Name or service not known", "Temporary failure in name resolution",
                 "No route to host", "timed out"):
        if hint in text:
            return hint.lower()
    if isinstance(exc, requests.exceptions.ChunkedEncodingError) or any(
            hint in text for hint in ("Connection aborted", "RemoteDisconnected", "Connection reset")):
        return "the connection dropped before the answer"
    return "connection failed"
