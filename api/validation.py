"""Turn request bodies into lists of texts, or ApiError saying what to fix."""
from __future__ import annotations

import json
from typing import Any

from flask import Request

from inferq.api.errors import ApiError


def _fail(code: str, message: str, status: int = 400) -> ApiError:
    return ApiError(status, code, message)


def check_text(value: Any, where: str) -> str:
    """Accept a non-empty string of valid Unicode."""
    if not isinstance(value, str):
        raise _fail("invalid_text", f"{where} must be a string, not {type(value).__name__}")
    if not value.strip():
        raise _fail("empty_text", f"{where} is empty; send at least one non-blank character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _fail("invalid_text", f"{where} contains invalid Unicode (a lone surrogate)") from None
    return value


def read_json(request: Request) -> Any:
    """Parse the body as JSON: UTF-8, well formed, not absurdly nested."""
    raw = request.get_data(cache=True)
    if not raw:
        raise _fail("invalid_json", "the body is empty; send a JSON object")
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise _fail("invalid_json", "the body is not valid UTF-8") from None
    except RecursionError:
        raise _fail("invalid_json", "the JSON is nested too deeply") from None
    except ValueError as exc:
        raise _fail("invalid_json", f"the body is not valid JSON: {exc}") from None


def require_json(request: Request) -> None:
    """Refuse anything but application/json."""
    if request.mimetype != "application/json":
        raise _fail(
            "unsupported_media_type",
            f"send the body as application/json, not {request.mimetype or 'no content type'}",
            status=415,
        )


JOB_FIELDS = {"text", "texts", "priority", "callback_url"}
PRIORITIES = ("normal", "low")


def priority_of_job(body: dict) -> str:
    """A POST /jobs body's priority: "normal" (the default) or "low" (the bulk lane even for one text)."""
    priority = body.get("priority", "normal")
    if priority not in PRIORITIES:
        raise _fail("invalid_priority", f"priority must be one of {', '.join(map(repr, PRIORITIES))}")
    return priority


def texts_from_job(body: Any, max_texts: int) -> list[str]:
    """Validate a POST /jobs body: {"text": str} or {"texts": [str, ...]}."""
    if not isinstance(body, dict):
        raise _fail("invalid_body", 'the body must be a JSON object: {"text": "..."} or {"texts": [...]}')
    unknown = sorted(set(body) - JOB_FIELDS)
    if unknown:
        raise _fail("unknown_field", f"unknown field(s) {', '.join(map(repr, unknown))}; use text or texts "
                    "(and optionally priority, callback_url)")
    if "text" in body and "texts" in body:
        raise _fail("ambiguous_body", "send either text or texts, not both")
    if "text" in body:
        return [check_text(body["text"], "text")]
    if "texts" not in body:
        raise _fail("missing_text", 'the body has no text; send {"text": "..."} or {"texts": [...]}')
    texts = body["texts"]
    if not isinstance(texts, list):
        raise _fail("invalid_texts", f"texts must be a list of strings, not {type(texts).__name__}")
    if not texts:
        raise _fail("empty_texts", "texts is an empty list; send at least one text")
    if len(texts) > max_texts:
        raise _fail("too_many_texts", f"texts has {len(texts)} items; send at most {max_texts} per job")
    return [check_text(t, f"texts[{i}]") for i, t in enumerate(texts)]


RAW_TEXT_TYPES = ("", "application/octet-stream")
"""Bodies the seed's clients send as raw bytes or a str (requests sets no Content-Type): UTF-8 text."""


def _decoded_body(request: Request, charset: str, what: str) -> str:
    try:
        text = request.get_data(cache=True).decode(charset)
    except (UnicodeDecodeError, LookupError):
        raise _fail("invalid_text", f"{what} cannot be decoded as {charset}; send the text as UTF-8") from None
    if not text:
        raise _fail("missing_text", f"{what} is empty; send the text to classify")
    return check_text(text, "the body")


def text_from_seed_request(request: Request) -> str:
    """Read the seed's /new_request body: JSON {"text"}, plain text, a form field, or raw UTF-8 bytes."""
    mimetype = request.mimetype
    if mimetype == "application/json":
        body = read_json(request)
        if not isinstance(body, dict) or "text" not in body:
            raise _fail("missing_text", 'send {"text": "..."} as JSON')
        return check_text(body["text"], "text")
    if mimetype == "text/plain":
        return _decoded_body(request, request.mimetype_params.get("charset", "utf-8"), "the text/plain body")
    if mimetype in RAW_TEXT_TYPES:
        return _decoded_body(request, "utf-8", f"the body ({mimetype or 'no content type'}, taken as text)")
    if mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        if "text" not in request.form:
            raise _fail("missing_text", "the form has no text field; send text=...")
        return check_text(request.form["text"], "the text field")
    raise _fail(
        "unsupported_media_type",
        "send application/json, text/plain, a form with a text field, or the text itself "
        f"(no content type or application/octet-stream), not {mimetype}",
        status=415,
    )


def wait_seconds(raw: str | None, max_wait: float) -> float:
    """Parse ?wait=N: seconds to hold the request; more than max_wait is cut to max_wait."""
    if raw is None or raw == "":
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        raise _fail("invalid_wait", f"wait must be a number of seconds between 0 and {max_wait:g}") from None
    if not value >= 0:  # also rejects nan
        raise _fail("invalid_wait", f"wait must be between 0 and {max_wait:g} seconds")
    return min(value, max_wait)


def single_wait(values: list[str], max_wait: float) -> float:
    """Parse the ?wait values of a request, refusing more than one."""
    if len(values) > 1:
        raise _fail("invalid_wait", f"wait is given {len(values)} times; give it once")
    return wait_seconds(values[0] if values else None, max_wait)
