"""What the API accepts and answers, declared once.

api/validation.py checks requests against these declarations (pydantic), and
api/openapi.py hands the very same ones to spectree, which writes
``GET /openapi.json`` from them: a constraint changed here changes both what is
refused and what the document says. Responses are declared for the document
only: the fuzz tests check real answers against it, nothing does per request.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, StrictStr, model_validator
from pydantic_core import PydanticCustomError

from inferq import webhooks
from inferq.api import idempotency
from inferq.contract import BULK, INTERACTIVE
from inferq.jobview import STATUSES

if TYPE_CHECKING:  # mypy takes no Literal built from constants; pydantic (at run time) does
    Status = str
    Lane = str
else:
    Status = Literal[STATUSES]
    Lane = Literal[INTERACTIVE, BULK]

NON_BLANK = r"[^\s\x1c-\x1f\x85]"
"""A character that is not whitespace, for Python (what str.strip() removes, which adds \\x1c-\\x1f to \\s) and for
JSON Schema's ECMA regexes (whose \\s lacks \\x85). A text needs one; checked by pydantic's Rust regex, whose \\s
is Unicode's White_Space, and that equals str.isspace() once \\x1c-\\x1f are added (every code point compared)."""

Text = Annotated[StrictStr, Field(min_length=1, pattern=NON_BLANK, description="non-blank text to classify")]
Priority = Literal["normal", "low"]
JobId = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
Wait = Annotated[float, Field(ge=0, description="hold the request until the job is done or this many seconds pass "
                                                "(cut to INFERQ_MAX_WAIT_SECONDS)")]

CALLBACK_URL = {"type": "string", "format": "uri", "maxLength": webhooks.MAX_URL_LENGTH, "pattern": "^https?://",
                "description": "POSTed the job's JSON, signed (Inferq-Signature), once it is final; 400 "
                               "callback_url_not_allowed unless every address the host resolves to is public (or in "
                               "INFERQ_WEBHOOK_ALLOWED_NETWORKS)"}
"""callback_url as documented; webhooks.check() judges it (at submit and again at each delivery), not pydantic."""


def _absent() -> None:
    return None


def optional(**constraints: Any) -> Any:
    """A field that may be left out, but is never null when present (a null text is refused like a number)."""
    return Field(default_factory=_absent, **constraints)


def _text_or_texts(cls: type[BaseModel], body: Any) -> Any:
    # Unknown fields are answered first (extra="forbid" reports them); only then is the body judged by
    # which of text and texts it has, before their values are looked at.
    if isinstance(body, dict) and body.keys() <= cls.model_fields.keys():
        if "text" in body and "texts" in body:
            raise PydanticCustomError("ambiguous_body", "{message}",
                                      {"message": "send either text or texts, not both"})
        if "text" not in body and "texts" not in body:
            raise PydanticCustomError("missing_text", "{message}",
                                      {"message": 'the body has no text; send {"text": "..."} or {"texts": [...]}'})
    return body


def job_request(max_texts: int, callbacks: bool) -> type[BaseModel]:
    """POST /jobs's body for an API taking at most max_texts texts a job; callbacks: INFERQ_WEBHOOK_SECRET is set.

    Made per app (create_app), as the limit is a setting and the document states it (the client reads maxItems).
    """

    def document(schema: dict[str, Any]) -> None:
        schema["oneOf"] = [{"required": ["text"]}, {"required": ["texts"]}]  # what _text_or_texts checks
        if not callbacks:  # accepted, to be refused as callbacks_disabled: not something this API takes
            del schema["properties"]["callback_url"]

    class JobRequest(BaseModel):
        """{"text": "..."} or {"texts": [...]}, optionally priority and callback_url."""

        model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra=document)
        text: Text = optional()
        texts: list[Text] = Field(default_factory=list, min_length=1, max_length=max_texts)
        priority: Priority = Field("normal", description="low: the bulk lane even for one text (default normal: "
                                                         "one text is interactive)")
        callback_url: Any = optional(json_schema_extra=CALLBACK_URL)

        @model_validator(mode="before")
        @classmethod
        def one_of_text_and_texts(cls, body: Any) -> Any:
            return _text_or_texts(cls, body)

    return JobRequest


class SeedRequest(BaseModel):
    """The seed's JSON body (other fields are ignored, as the seed's orchestrator did)."""

    model_config = ConfigDict(strict=True)
    text: Text


class WaitQuery(BaseModel):
    """?wait=N (an empty wait= means no wait)."""

    wait: Wait = Field(0, json_schema_extra={"allowEmptyValue": True})


class IdempotencyHeaders(BaseModel):
    """An optional Idempotency-Key (api/idempotency.py checks it)."""

    key: str = optional(alias="Idempotency-Key", pattern=idempotency.VALID_KEY.pattern,
                        description="same key and body: the same job; same key, other body: 409")


class Error(BaseModel):
    """Every refusal: a stable code and what to fix."""

    error: str
    message: str


class Accepted(BaseModel):
    """A queued job (or, with a replayed Idempotency-Key, the earlier one)."""

    job_id: JobId
    status: Literal["queued"]


class Result(BaseModel):
    """One text's label and its class probabilities."""

    label: str
    probabilities: dict[str, float]


class Callback(BaseModel):
    """A callback's delivery state (the states tasks/callbacks.py stores)."""

    url: str
    state: Literal["pending", "delivered", "gave_up"]
    attempts: Annotated[int, Field(ge=0)]
    delivered_at: str = optional()
    last_error: str = optional()


class Job(BaseModel):
    """A job as GET /jobs/<id> shows it (jobview.describe)."""

    job_id: str
    status: Status
    texts: Annotated[int, Field(ge=1)]
    lane: Lane = optional()
    results: list[Result] = optional()
    model: dict[str, Any] = optional()
    worker: dict[str, Any] = optional()
    error: Error = optional()
    timings: dict[str, Any]
    callback: Callback = optional()


class Cancelled(BaseModel):
    """A DELETE's outcome."""

    job_id: str
    status: Literal["cancelled", "cancel_requested"]


class SeedAccepted(BaseModel):
    """The seed's acknowledgement, with the job's id, status and where to read it."""

    message: str
    job_id: JobId
    status: Status
    status_url: str
    error: Error = optional()


class SeedResult(BaseModel):
    """A finished job in the shape of the seed's model containers."""

    input_text: str
    probabilities: Annotated[list[float], Field(description="in the order of the model's labels")]
    label: str
    job_id: JobId


class SeedAnswer(RootModel[SeedAccepted | SeedResult]):
    """The seed route's 200: the acknowledgement, or with ?wait=N and the job done in time, its result."""


class Health(BaseModel):
    """The API process is up."""

    status: Literal["ok"]


class Readiness(BaseModel):
    """Redis answers and a worker sent a heartbeat recently (else 503)."""

    status: Literal["ready", "unavailable"]
    redis: Literal["ok", "unreachable"]
    workers: int
    message: str = optional()
