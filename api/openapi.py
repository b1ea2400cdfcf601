"""``GET /openapi.json``: the API described as OpenAPI 3.0, from the settings it runs with.

The fuzz tests (tests/security) generate requests from this document and
check every answer against it, so it has to say what the API really does.
"""
from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify

from inferq.jobview import STATUSES

bp = Blueprint("openapi", __name__)

_ERROR = {"$ref": "#/components/schemas/Error"}


def _errors(*codes: int) -> dict:
    descriptions = {
        400: "invalid request (see `error`)", 401: "API key missing or wrong (when keys are configured)",
        404: "no such job (never issued, expired, or another key's)",
        409: "Idempotency-Key reused with another body; on DELETE, the job has succeeded or failed already",
        413: "body too large", 415: "unsupported media type", 429: "queue full: retry after `Retry-After` seconds",
        503: "Redis unreachable: retry shortly",
    }
    answers: dict[str, Any] = {
        str(c): {"description": descriptions[c], "content": {"application/json": {"schema": _ERROR}}} for c in codes}
    # gunicorn answers these itself, in HTML, before the API runs (api/gunicorn_conf.py).
    answers["400"]["content"]["text/html"] = {"schema": {"type": "string"}}
    answers["400"]["description"] += "; a header field too long for gunicorn: its own HTML page"
    answers["414"] = {"description": "request line too long (gunicorn's own HTML page, before the API)",
                      "content": {"text/html": {"schema": {"type": "string"}}}}
    return answers


def document(max_texts: int, max_body: int, max_wait: float, keys_required: bool, callbacks: bool = False) -> dict:
    """Build the OpenAPI document for these limits; callbacks: INFERQ_WEBHOOK_SECRET is set (else a
    callback_url is refused with 400 callbacks_disabled, and the document has no such field)."""
    # At least one character that is not whitespace (blank texts are refused with 400
    # empty_text). The API strips what Python calls whitespace, which adds \x1c-\x1f and
    # \x85 to what JSON Schema's (ECMA) \s means.
    text = {"type": "string", "minLength": 1, "pattern": "[^\\s\\x1c-\\x1f\\x85]",
            "description": "non-blank text to classify"}
    options: dict[str, Any] = {
        "priority": {"type": "string", "enum": ["normal", "low"],
                     "description": "low: the bulk lane even for one text (default normal: one text is interactive)"},
    }
    if callbacks:
        options["callback_url"] = {
            "type": "string", "format": "uri", "maxLength": 2048, "pattern": "^https?://",
            "description": "POSTed the job's JSON, signed (Inferq-Signature), once it is final; 400 "
                           "callback_url_not_allowed unless every address the host resolves to is public (or in "
                           "INFERQ_WEBHOOK_ALLOWED_NETWORKS)"}
    job_body = {
        "oneOf": [
            {"type": "object", "required": ["text"], "additionalProperties": False,
             "properties": {"text": text, **options}},
            {"type": "object", "required": ["texts"], "additionalProperties": False,
             "properties": {"texts": {"type": "array", "items": text, "minItems": 1, "maxItems": max_texts},
                            **options}},
        ]
    }
    accepted = {"description": "queued (or, with a replayed Idempotency-Key, the earlier job)",
                "headers": {"Location": {"schema": {"type": "string"}}},
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Accepted"}}}}
    idem = {"name": "Idempotency-Key", "in": "header", "required": False,
            "description": "same key and body: the same job; same key, other body: 409",
            "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,255}$"}}
    security: list[dict[str, list]] = [{"apiKey": []}, {"bearer": []}] if keys_required else []
    job_id_param = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
    cancelled = {"type": "object", "required": ["job_id", "status"],
                 "properties": {"job_id": {"type": "string"},
                                "status": {"type": "string", "enum": ["cancelled", "cancel_requested"]}}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "inferq", "version": "0.1.0",
                 "description": f"Text classification jobs. Bodies are at most {max_body} bytes. Completion "
                                "callbacks (callback_url) are " + ("on." if callbacks else
                                "off on this API (no INFERQ_WEBHOOK_SECRET): 400 callbacks_disabled.")},
        "security": security,
        "paths": {
            "/jobs": {"post": {
                "operationId": "submitJob", "summary": "Queue one text or a bulk job of texts",
                "parameters": [idem, {
                    "name": "wait", "in": "query", "required": False,
                    "description": "hold the request until the job is done or this many seconds pass "
                                   f"(cut to {max_wait:g}): 200 with the job when done by then, else 202",
                    "schema": {"type": "number", "minimum": 0}}],
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/JobRequest"}}}},
                "responses": {"200": {"description": "with ?wait=N: the job, done within N seconds", "content": {
                                          "application/json": {"schema": {"$ref": "#/components/schemas/Job"}}}},
                              "202": accepted, **_errors(400, 401, 409, 413, 415, 429, 503)},
            }},
            "/jobs/{job_id}": {"get": {
                "operationId": "getJob", "summary": "A job's status and, when done, its results",
                "parameters": [
                    job_id_param,
                    {"name": "wait", "in": "query", "required": False,
                     "description": "hold the request until the job is done or this many seconds pass "
                                    f"(cut to {max_wait:g})",
                     "schema": {"type": "number", "minimum": 0}},
                ],
                "responses": {"200": {"description": "the job", "content": {
                                          "application/json": {"schema": {"$ref": "#/components/schemas/Job"}}}},
                              **_errors(400, 401, 404, 503)},
            }, "delete": {
                "operationId": "cancelJob",
                "summary": "Cancel a job: queued, it never runs (200 cancelled); running, its result is discarded "
                           "(202 cancel_requested, later cancelled); idempotent",
                "parameters": [job_id_param],
                "responses": {
                    "200": {"description": "cancelled: no worker had started it, and none will",
                            "content": {"application/json": {"schema": cancelled}}},
                    "202": {"description": "cancel_requested: a worker runs it; its result will be discarded",
                            "content": {"application/json": {"schema": cancelled}}},
                    **_errors(400, 401, 404, 409, 503)},
            }},
            "/new_request": {"post": {
                "operationId": "seedNewRequest",
                "summary": "The seed's route: one text; 200 once queued, or with ?wait=N the result if done by then",
                # Not in the content map: any UTF-8 is a text, so no schema can say what is invalid.
                "description": "A body without a Content-Type, or sent as application/octet-stream, is taken "
                               "as the text itself (UTF-8): what the seed's clients send.",
                "parameters": [idem, {
                    "name": "wait", "in": "query", "required": False, "allowEmptyValue": True,  # wait=: no wait
                    "description": "hold the request until the job is done or this many seconds pass "
                                   f"(cut to {max_wait:g}); done: the result in the seed's container shape",
                    "schema": {"type": "number", "minimum": 0}}],
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": {"type": "object", "required": ["text"],
                                                     "properties": {"text": text}}},
                    "text/plain": {"schema": text},
                    "application/x-www-form-urlencoded": {"schema": {"type": "object", "required": ["text"],
                                                                      "properties": {"text": text}}},
                }},
                "responses": {"200": {
                    "description": "queued (the seed's message, the job id and its status URL); with ?wait=N and "
                                   "the job done in time, its result as the seed's model containers answered",
                    "headers": {"Location": {"schema": {"type": "string"}}},
                    "content": {"application/json": {"schema": {"anyOf": [
                        {"$ref": "#/components/schemas/SeedAccepted"}, {"$ref": "#/components/schemas/SeedResult"}]}}},
                }, **_errors(400, 401, 409, 413, 415, 429, 503)},
            }},
            "/healthz": {"get": {"operationId": "healthz", "summary": "the API process is up", "security": [],
                                 "responses": {"200": {"description": "up"}}}},
            "/readyz": {"get": {"operationId": "readyz", "security": [],
                                "summary": "Redis answers and a worker sent a heartbeat recently",
                                "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}}}},
            "/metrics": {"get": {"operationId": "metrics", "security": [],
                                 "summary": "Prometheus metrics: jobs submitted, completed, failed, cancelled, "
                                            "queue depth per lane, latency",
                                 "responses": {"200": {"description": "Prometheus text format",
                                                       "content": {"text/plain": {"schema": {"type": "string"}}}},
                                               "503": {"description": "Redis unreachable"}}}},
        },
        "components": {
            "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                                "bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "JobRequest": job_body,
                "Error": {"type": "object", "required": ["error", "message"],
                          "properties": {"error": {"type": "string"}, "message": {"type": "string"}}},
                "Accepted": {"type": "object", "required": ["job_id", "status"],
                             "properties": {"job_id": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
                                            "status": {"type": "string", "enum": ["queued"]},
                                            "message": {"type": "string"}}},
                "SeedAccepted": {"type": "object", "required": ["message", "job_id", "status", "status_url"],
                                 "properties": {"message": {"type": "string"},
                                                "job_id": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
                                                "status": {"type": "string", "enum": ["queued", "running", "failed"]},
                                                "status_url": {"type": "string"},
                                                "error": {"$ref": "#/components/schemas/Error"}}},
                "SeedResult": {"type": "object", "required": ["input_text", "probabilities", "label", "job_id"],
                               "properties": {"input_text": {"type": "string"},
                                              "probabilities": {"type": "array", "items": {"type": "number"},
                                                                "description": "in the order of the model's labels"},
                                              "label": {"type": "string"},
                                              "job_id": {"type": "string", "pattern": "^[0-9a-f]{32}$"}}},
                "Job": {"type": "object", "required": ["job_id", "status", "texts", "timings"],
                        "properties": {
                            "job_id": {"type": "string"},
                            "status": {"type": "string", "enum": list(STATUSES)},
                            "texts": {"type": "integer", "minimum": 1},
                            "lane": {"type": "string", "enum": ["interactive", "bulk"]},
                            "results": {"type": "array", "items": {
                                "type": "object", "required": ["label", "probabilities"],
                                "properties": {"label": {"type": "string"},
                                               "probabilities": {"type": "object",
                                                                 "additionalProperties": {"type": "number"}}}}},
                            "model": {"type": "object"}, "worker": {"type": "object"},
                            "error": {"$ref": "#/components/schemas/Error"},
                            "timings": {"type": "object"},
                            "callback": {"type": "object", "required": ["url", "state", "attempts"], "properties": {
                                "url": {"type": "string"},
                                "state": {"type": "string", "enum": ["pending", "delivered", "gave_up"]},
                                "attempts": {"type": "integer", "minimum": 0},
                                "delivered_at": {"type": "string"},
                                "last_error": {"type": "string"}}}}},
            },
        },
    }


@bp.get("/openapi.json")
def openapi_json():
    """The OpenAPI document of this API."""
    config = current_app.config
    return jsonify(document(config["INFERQ_MAX_TEXTS"], config["MAX_CONTENT_LENGTH"],
                            config["INFERQ_MAX_WAIT_SECONDS"], bool(config["INFERQ_API_KEYS"]),
                            bool(config["INFERQ_WEBHOOK_SECRET"])))
