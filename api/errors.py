"""API errors: a stable machine-readable code and a message saying what to fix."""
from __future__ import annotations

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from inferq.api.config import settings_of


class ApiError(Exception):
    """An error answered as JSON ``{"error": code, "message": message}``."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


# Werkzeug's own errors (routing, body size) mapped to our stable codes.
HTTP_CODES = {
    400: ("bad_request", "the request could not be understood"),
    404: ("not_found", "no such route; see /openapi.json for the API"),
    405: ("method_not_allowed", "this route does not accept that HTTP method"),
    413: ("body_too_large", "the request body is larger than the API accepts"),
}


def error_response(status: int, code: str, message: str, headers: dict | None = None):
    """Build the JSON error response."""
    response = jsonify(error=code, message=message)
    response.status_code = status
    response.headers.update(headers or {})
    return response


DRAIN_LIMIT = 16 * 1024 * 1024
"""Largest refused body the API still reads (and discards) before answering 413."""


def drain_body() -> None:
    """Read and discard a refused request body, so the client gets the 413 rather than a reset.

    Closing a connection with unread request bytes makes the kernel send RST,
    and the client may lose the answer; bodies past DRAIN_LIMIT are not worth
    reading, and get the reset.
    """
    stream = request.environ.get("wsgi.input")
    remaining = request.content_length or 0
    if stream is None or remaining > DRAIN_LIMIT:
        return
    while remaining > 0:
        chunk = stream.read(min(65536, remaining))
        if not chunk:
            return
        remaining -= len(chunk)


def register(app: Flask) -> None:
    """Answer every error, ours and Werkzeug's, as JSON."""

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        code, message = HTTP_CODES.get(exc.code or 500, ("http_error", exc.description or ""))
        if exc.code == 413:
            drain_body()
            message = (
                f"request body exceeds {settings_of(app).max_body_bytes} bytes; "
                "send fewer or shorter texts"
            )
        return error_response(exc.code or 500, code, message)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        app.logger.exception("unhandled error")
        return error_response(500, "internal_error", "the API failed unexpectedly; see its log")
