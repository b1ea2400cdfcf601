"""``GET /openapi.json``: the API as OpenAPI 3.1, written by spectree from the models of api/schemas.py.

spectree only documents here (skip_validation): api/validation.py checks requests
against the same models itself, because the API reads the JSON body itself
(strict UTF-8, its own invalid_json messages) and checks the key, the headers, the
query and then the body, in that order, where spectree would read the body with
Flask's lenient get_json() and check it before the view runs. The fuzz tests
(tests/security) generate requests from this document and check every answer
against it, so it has to say what the API really does.
"""
from __future__ import annotations

from importlib.metadata import version
from typing import Any

from flask import Blueprint, Flask, current_app, jsonify
from pydantic import TypeAdapter
from spectree import Response, SpecTree
from spectree.models import InType, SecureType, SecurityScheme, SecuritySchemeData

from inferq.api import config, schemas

bp = Blueprint("openapi", __name__)

REFUSALS = {
    400: "invalid request (see `error`)", 401: "API key missing or wrong (when keys are configured)",
    404: "no such job (never issued, expired, or another key's)",
    409: "Idempotency-Key reused with another body; on DELETE, the job has succeeded or failed already",
    413: "body too large", 415: "unsupported media type", 429: "queue full: retry after `Retry-After` seconds",
    503: "Redis unreachable, or too few replicas acknowledged the job: retry shortly",
}
"""What each error status means, for the routes that answer it (always with schemas.Error)."""

SEED_OPERATIONS = ("seedNewRequest", "seedNewRequests")
"""The seed's route under its two names, /new_request and /new_requests."""

SECURITY_SCHEMES = [  # what api/auth.py accepts
    SecurityScheme(name="apiKey",
                   data=SecuritySchemeData(type=SecureType.API_KEY, name="X-API-Key", field_in=InType.HEADER)),
    SecurityScheme(name="bearer", data=SecuritySchemeData(type=SecureType.HTTP, scheme="bearer")),
]


def _answers(*refusals: int, **answers: tuple[Any, str]) -> Response:
    """A route's answers: its successes (HTTP_200=(model, description)) and its refusals, each a schemas.Error."""
    return Response(**answers, **{f"HTTP_{status}": (schemas.Error, REFUSALS[status]) for status in refusals})


def _operations(app: Flask) -> dict[str, dict[str, Any]]:
    """What spectree documents of each endpoint (a fresh Response each: spectree binds and extends it)."""
    job = (schemas.Job, "with ?wait=N: the job, done within N seconds")

    def seed(operation_id: str) -> dict[str, Any]:
        return dict(operation_id=operation_id, json=schemas.SeedRequest, form=schemas.SeedRequest,
                    query=schemas.WaitQuery, headers=schemas.IdempotencyHeaders,
                    resp=_answers(400, 401, 409, 413, 415, 429, 503, HTTP_200=(
                        schemas.SeedAnswer, "queued (the seed's message, the job id and its status URL); with "
                        "?wait=N and the job done in time, its result as the seed's model containers answered")))

    return {
        "jobs.submit_job": dict(
            operation_id="submitJob", json=app.extensions["inferq.job_request"], query=schemas.WaitQuery,
            headers=schemas.IdempotencyHeaders,
            resp=_answers(400, 401, 409, 413, 415, 429, 503, HTTP_200=job, HTTP_202=(
                schemas.Accepted, "queued (or, with a replayed Idempotency-Key, the earlier job)"))),
        "jobs.get_job": dict(operation_id="getJob", query=schemas.WaitQuery,
                             resp=_answers(400, 401, 404, 503, HTTP_200=(schemas.Job, "the job"))),
        "jobs.cancel_job": dict(operation_id="cancelJob", resp=_answers(
            400, 401, 404, 409, 503,
            HTTP_200=(schemas.Cancelled, "cancelled: no worker had started it, and none will"),
            HTTP_202=(schemas.Cancelled, "cancel_requested: a worker runs it; its result will be discarded"))),
        "jobs.seed_new_request": seed(SEED_OPERATIONS[0]),
        "jobs.seed_new_requests": seed(SEED_OPERATIONS[1]),
        "health.healthz": dict(operation_id="healthz", security={}, resp=Response(HTTP_200=(schemas.Health, "up"))),
        "health.readyz": dict(operation_id="readyz", security={}, resp=Response(
            HTTP_200=(schemas.Readiness, "ready"), HTTP_503=(schemas.Readiness, "not ready"))),
        "metrics.prometheus_metrics": dict(operation_id="metrics", security={}, resp=_answers(
            503, HTTP_200=(None, "Prometheus text format"))),
    }


def _complete(document: dict[str, Any]) -> dict[str, Any]:
    """Add what spectree has no words for: gunicorn's own answers, the seed's other bodies, response headers."""
    text = TypeAdapter(schemas.Text).json_schema()
    location = {"Location": {"description": "the job's URL", "schema": {"type": "string"}}}
    for operations in document["paths"].values():
        for operation in operations.values():
            responses = operation["responses"]
            # gunicorn answers these itself, in HTML, before the API runs (api/gunicorn_conf.py).
            responses["400"]["content"]["text/html"] = {"schema": {"type": "string"}}
            responses["400"]["description"] += "; a header field too long for gunicorn: its own HTML page"
            responses["414"] = {"description": "request line too long (gunicorn's own HTML page, before the API)",
                                "content": {"text/html": {"schema": {"type": "string"}}}}
            for parameter in operation["parameters"]:  # spectree leaves it in the schema; OpenAPI wants it here
                if parameter["schema"].pop("allowEmptyValue", False):
                    parameter["allowEmptyValue"] = True
            if operation["operationId"] == "submitJob":
                responses["202"]["headers"] = location
            if operation["operationId"] in SEED_OPERATIONS:
                responses["200"]["headers"] = location
                content = operation["requestBody"]["content"]
                content["application/x-www-form-urlencoded"] = content["multipart/form-data"]
                content["text/plain"] = {"schema": text}
    return document


def register(app: Flask) -> None:
    """Document every route of app with spectree, and serve the document at /openapi.json."""
    settings = config.settings_of(app)
    spec = SpecTree(
        "flask", mode="strict", annotations=False, title="inferq", version=version("inferq"),
        description=f"Text classification jobs. Bodies are at most {settings.max_body_bytes} bytes; waits are "
                    f"cut to {settings.max_wait_seconds:g} s. Completion callbacks (callback_url) are "
                    + ("on." if settings.webhooks.secret else
                       "off on this API (no INFERQ_WEBHOOK_SECRET): 400 callbacks_disabled."),
        security_schemes=SECURITY_SCHEMES,
        security=[{"apiKey": []}, {"bearer": []}] if settings.keys.accepted else {},
        naming_strategy=lambda model: model.__name__, nested_naming_strategy=lambda _parent, child: child,
        validation_error_status=400, validation_error_model=schemas.Error,
    )
    # spectree finds a route's models on the view it wrapped. The models depend on this app's limits, so the
    # views are wrapped here, per app, for as long as spectree writes the document; then the bare views are put
    # back, and requests never pass through spectree (it would only repack each answer).
    views = dict(app.view_functions)
    for endpoint, declared in _operations(app).items():
        app.view_functions[endpoint] = spec.validate(skip_validation=True, **declared)(views[endpoint])
    with app.app_context():
        app.extensions["inferq.openapi"] = _complete(spec.spec)
    app.view_functions.update(views)
    app.register_blueprint(bp)


@bp.get("/openapi.json")
def openapi_json():
    """The OpenAPI document of this API."""
    return jsonify(current_app.extensions["inferq.openapi"])
