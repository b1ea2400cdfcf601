"""Turn requests into validated values, or ApiError with a stable code and a message saying what to fix.

What a valid request is lives in api/schemas.py; pydantic checks it here, and what
pydantic reports is mapped to our codes and messages below (clients match on those,
so they never follow pydantic's wording). The JSON itself is read here, not by
pydantic: strict UTF-8, depth bounded by the interpreter, Python's own error text.
"""
from __future__ import annotations

import json
import logging
from typing import Any, NamedTuple, get_args

from flask import Request
from pydantic import BaseModel, TypeAdapter, ValidationError

from inferq.api import schemas
from inferq.api.errors import ApiError

log = logging.getLogger(__name__)

EMPTY_TEXT = "{where} is empty; send at least one non-blank character"
TEXT_ERRORS = {
    "string_type": ("invalid_text", "{where} must be a string, not {type}"),
    "string_unicode": ("invalid_text", "{where} contains invalid Unicode (a lone surrogate)"),
    "string_too_short": ("empty_text", EMPTY_TEXT),
    "string_pattern_mismatch": ("empty_text", EMPTY_TEXT),
}
"""pydantic's error on a text -> our code and message ({where}: which text, {type}: what was sent instead)."""

TEXTS_ERRORS = {
    "list_type": ("invalid_texts", "texts must be a list of strings, not {type}"),
    "too_short": ("empty_texts", "texts is an empty list; send at least one text"),
    "too_long": ("too_many_texts", "texts has {actual_length} items; send at most {max_length} per job"),
}
"""pydantic's error on the texts list itself -> our code and message."""

BODY_ERRORS = ("ambiguous_body", "missing_text")
"""Errors schemas.py raises itself, under our codes, with our messages."""

PRIORITIES = get_args(schemas.Priority)
TEXT = TypeAdapter(schemas.Text)
WAIT = TypeAdapter(schemas.Wait)


def _fail(code: str, message: str, status: int = 400) -> ApiError:
    return ApiError(status, code, message)


class Submission(NamedTuple):
    """A valid POST /jobs body: its texts in order, its priority and its callback_url (checked by the view)."""

    texts: list[str]
    priority: str
    callback_url: Any
    has_callback: bool


def _unmapped(error: Any, code: str) -> ApiError:
    # A constraint added to schemas.py without its code here: still a 400 that says what is wrong.
    log.error("no inferq code for pydantic's %s at %s; add one in api/validation.py", error["type"], error["loc"])
    return _fail(code, f"{'.'.join(map(str, error['loc'])) or 'the body'}: {error['msg']}")


def _text_error(error: Any, where: str) -> ApiError:
    if error["type"] not in TEXT_ERRORS:
        return _unmapped(error, "invalid_text")
    code, template = TEXT_ERRORS[error["type"]]
    return _fail(code, template.format(where=where, type=type(error["input"]).__name__))


def _job_error(exc: ValidationError, model: type[BaseModel]) -> ApiError:
    errors = exc.errors(include_url=False)
    unknown = sorted(str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden")
    if unknown:
        optional = ", ".join(name for name in model.model_fields if name not in ("text", "texts"))
        return _fail("unknown_field", f"unknown field(s) {', '.join(map(repr, unknown))}; use text or texts "
                     f"(and optionally {optional})")
    error = errors[0]  # one answer per request: the first in the model's field order
    kind, loc = error["type"], error["loc"]
    if kind == "model_type":
        return _fail("invalid_body", 'the body must be a JSON object: {"text": "..."} or {"texts": [...]}')
    if kind in BODY_ERRORS:
        return _fail(kind, error["ctx"]["message"])
    if loc == ("priority",):
        return _fail("invalid_priority", f"priority must be one of {', '.join(map(repr, PRIORITIES))}")
    if loc == ("texts",) and kind in TEXTS_ERRORS:
        code, template = TEXTS_ERRORS[kind]
        return _fail(code, template.format(type=type(error["input"]).__name__, **error.get("ctx", {})))
    if loc == ("text",):
        return _text_error(error, "text")
    if len(loc) == 2 and loc[0] == "texts":
        return _text_error(error, f"texts[{loc[1]}]")
    return _unmapped(error, "invalid_body")


def submission(request: Request, model: type[BaseModel]) -> Submission:
    """Validate a POST /jobs body (JSON) against the app's schemas.job_request model."""
    require_json(request)
    body = read_json(request)
    try:
        job: Any = model.model_validate(body)
    except ValidationError as exc:
        raise _job_error(exc, model) from None
    fields = job.model_fields_set
    texts = [job.text] if "text" in fields else job.texts
    return Submission(texts, job.priority, job.callback_url, "callback_url" in fields)


def check_text(value: Any, where: str) -> str:
    """Accept a non-blank string of valid Unicode (schemas.Text)."""
    try:
        return TEXT.validate_python(value)
    except ValidationError as exc:
        raise _text_error(exc.errors(include_url=False)[0], where) from None


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
        try:
            return schemas.SeedRequest.model_validate(body).text
        except ValidationError as exc:
            error = exc.errors(include_url=False)[0]
            if error["loc"] == ("text",) and error["type"] != "missing":
                raise _text_error(error, "text") from None
            raise _fail("missing_text", 'send {"text": "..."} as JSON') from None
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
    """Parse ?wait=N (schemas.Wait): seconds to hold the request; more than max_wait is cut to max_wait."""
    if raw is None or raw == "":
        return 0.0
    try:
        value = WAIT.validate_python(raw)
    except ValidationError as exc:
        if exc.errors(include_url=False)[0]["type"] == "greater_than_equal":  # negative, or nan
            raise _fail("invalid_wait", f"wait must be between 0 and {max_wait:g} seconds") from None
        raise _fail("invalid_wait", f"wait must be a number of seconds between 0 and {max_wait:g}") from None
    return min(value, max_wait)


def single_wait(values: list[str], max_wait: float) -> float:
    """Parse the ?wait values of a request, refusing more than one."""
    if len(values) > 1:
        raise _fail("invalid_wait", f"wait is given {len(values)} times; give it once")
    return wait_seconds(values[0] if values else None, max_wait)
