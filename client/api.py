"""A small HTTP client of inferq's API: submit jobs, read them back, wait for results.

Only requests: no Flask, no torch, so it installs anywhere a client runs.
"""
from __future__ import annotations

import threading
import time

import requests

from inferq.client import pinning

TERMINAL = ("succeeded", "failed", "cancelled")
"""Statuses after which a job never changes."""

MAX_POLL_SECONDS = 30.0
"""Longest single ?wait= the client asks for (the API cuts longer ones to its own maximum)."""

MAX_BUSY_RETRIES = 20
"""How often a submit answered 429 (queue full) or 503 is retried, honouring Retry-After."""


class ApiUnreachable(Exception):
    """Nothing answers at the API's address (refused, timed out, bad host)."""


class ApiRefused(Exception):
    """The API answered with an error: its stable code and its message."""

    def __init__(self, status: int, code: str, message: str, retry_after: float | None = None):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message
        self.retry_after = retry_after


class Client:
    """inferq's API at base_url; safe to share between threads (one HTTP session per thread)."""

    def __init__(self, base_url: str, api_key: str = "", timeout: float = 10.0, cert_sha256: str = ""):
        # cert_sha256: the API's certificate fingerprint, pinned (a deployed cluster's self-signed one).
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.headers = {"X-API-Key": api_key} if api_key else {}
        self.cert_sha256 = pinning.normalize(cert_sha256) if cert_sha256 else ""
        self._local = threading.local()

    def _session(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
            self._local.session.headers.update(self.headers)
            if self.cert_sha256:
                pinning.pin(self._local.session, self.cert_sha256)
        return self._local.session

    def _request(self, method: str, path: str, timeout: float | None = None, **kwargs) -> dict:
        url = self.base_url + path
        try:
            response = self._session().request(method, url, timeout=timeout or self.timeout, **kwargs)
        except requests.ConnectionError as exc:
            raise ApiUnreachable(f"cannot reach the API at {self.base_url} ({_reason(exc)})") from None
        except requests.Timeout:
            waited = timeout or self.timeout
            raise ApiUnreachable(f"the API at {self.base_url} did not answer within {waited:g}s") from None
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code >= 400:
            raise ApiRefused(response.status_code, body.get("error", "http_error"),
                             body.get("message", response.reason or "error"),
                             _seconds(response.headers.get("Retry-After")))
        return body

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
        for attempt in range(MAX_BUSY_RETRIES + 1):
            try:
                return self._request("POST", "/jobs", json=payload, params=params, timeout=self.timeout + wait)
            except ApiRefused as exc:
                if exc.status not in (429, 503) or attempt == MAX_BUSY_RETRIES:
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
        return self._request("POST", "/new_request", json={"text": text})["job_id"]

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


def _seconds(raw: str | None) -> float | None:
    try:
        return max(0.0, float(raw)) if raw else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


def _reason(exc: requests.ConnectionError) -> str:
    text = str(exc)
    if "Fingerprints did not match" in text:
        return "its TLS certificate is not the pinned one: check INFERQ_API_CERT_SHA256, and who answers there"
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return "its TLS certificate is not one a CA vouches for: pin it with INFERQ_API_CERT_SHA256"
    for hint in ("Connection refused", "Name or service not known", "Temporary failure in name resolution",
                 "No route to host", "timed out"):
        if hint in text:
            return hint.lower()
    return "connection failed"
