"""inferq's settings: typed, one section per kind of process, read from the environment.

Each process reads the sections it uses when it starts (``settings.require(settings.Worker)``
in the worker's main, ``settings.Api`` in the API's ...), and a value it cannot run with stops
it with one line naming the variable. Importing this module reads nothing and never exits, so
the command-line client is never stopped by a server-only setting.

Decision: a small parser of our own rather than pydantic-settings. Every setting is one flat
value from one environment variable; this keeps the client's install to requests and tqdm,
gives one spelling for booleans, errors that name the variable as the user wrote it, and
sections that tests load from a plain mapping. ``python -m inferq.settings`` prints the table
that docs/settings.md holds.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar


def _user_dir(variable: str, fallback: str) -> Path:
    """inferq's folder in an XDG base directory: $variable, else fallback under the home directory."""
    return Path(os.environ.get(variable) or Path.home() / fallback) / "inferq"


USER_CACHE_DIR = _user_dir("XDG_CACHE_HOME", ".cache")
"""Where models built or exported here are cached by default: a user's folder, never the installed package
(a wheel install puts the package in site-packages). `make run` points it at the checkout's .cache/models."""

USER_STATE_DIR = _user_dir("XDG_STATE_HOME", ".local/state")
"""Where the local stack keeps Redis's data, logs and Flower's login by default (`make run`: the checkout's
state/)."""

LOCAL_REDIS_URL = "redis://127.0.0.1:6379/0"
"""The Redis every process uses when REDIS_URL is not set."""

DEFAULT_MODEL = "distilbert-base-uncased-finetuned-sst-2-english"
"""What users with a network get: the SST-2 sentiment model from the hub."""

PRECISIONS = ("fp32", "int8", "onnx-fp32", "onnx-int8")
"""Inference paths a worker can run: torch fp32 or int8 (dynamic quantization), ONNX Runtime fp32 or int8."""

APPENDFSYNC_MODES = ("always", "everysec", "no")
"""Redis AOF fsync policies: what a host crash can lose (docs/operations.md, "Guarantees")."""

LEASE_BEATS = 3
"""Heartbeats a job's lease must outlast at least: its worker renews it at every beat, and one late beat
(a busy machine, a Redis restarting) must not give a running job to a second worker."""

MIN_API_KEY_LENGTH = 16
"""Shorter API keys can be guessed; refuse them at start-up."""

TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
"""The one vocabulary of boolean settings (Hugging Face's HF_HUB_OFFLINE=1 included)."""


class ConfigError(ValueError):
    """A setting has a value inferq cannot run with; str() is the one line to show."""


def setting(env: str, default: Any, doc: str, minimum: float | None = None,
            choices: tuple[str, ...] = (), shown: str = "") -> Any:
    """Declare a section's field: its environment variable, default, meaning and bounds (shown: how the
    settings page writes a default that depends on the machine)."""
    return field(default=default, metadata={"env": env, "doc": doc, "minimum": minimum, "choices": choices,
                                            "shown": shown})


@dataclass(frozen=True)
class Section:
    """A group of settings one kind of process reads; subclasses add fields and checks."""

    def check(self) -> None:
        """Refuse combinations of values that would lose or duplicate work (per section)."""


@dataclass(frozen=True)
class Redis(Section):
    """Where the queue is: every server process (API, worker, Flower, the stack) connects to it."""

    redis_url: str = setting("REDIS_URL", "", f"The Redis holding queue, results and job records (unset: "
                                              f"{LOCAL_REDIS_URL}; the local stack then starts its own).")
    broker_url: str = setting("INFERQ_BROKER_URL", "", "Celery's broker, when it is not REDIS_URL.")
    result_backend: str = setting("INFERQ_RESULT_BACKEND", "", "Celery's result backend, when it is not REDIS_URL.")
    queue: str = setting("INFERQ_QUEUE", "inferq", "The interactive lane's queue (a Redis list of that name); "
                         "the bulk lane's is this name + `.bulk`.")
    redis_timeout: float = setting("INFERQ_REDIS_TIMEOUT", 1.5, "Seconds a Redis call may take before the "
                                   "API answers 503 or a worker retries.", minimum=0.1)
    result_ttl: int = setting("INFERQ_RESULT_TTL", 24 * 3600, "Seconds a job's record and result are kept.",
                              minimum=1)
    heartbeat_seconds: float = setting("INFERQ_HEARTBEAT_SECONDS", 2.0, "How often a worker says it is alive "
                                       "(/readyz counts workers seen in the last three beats).", minimum=0.1)

    @property
    def broker(self) -> str:
        """The broker URL every process uses."""
        return self.broker_url or self.redis_url or LOCAL_REDIS_URL

    @property
    def backend(self) -> str:
        """The result backend URL every process uses."""
        return self.result_backend or self.redis_url or LOCAL_REDIS_URL


@dataclass(frozen=True)
class Celery(Redis):
    """Celery's own settings (celeryconfig.py): how jobs are delivered, bounded and batched."""

    task_time_limit: int = setting("INFERQ_TASK_TIME_LIMIT", 300, "Seconds a job may run before its worker "
                                   "process is killed.", minimum=1)
    task_soft_time_limit: int = setting("INFERQ_TASK_SOFT_TIME_LIMIT", 0, "Seconds before the job is asked to "
                                        "stop (0: 30 s under the hard limit).", minimum=0)
    visibility_timeout: int = setting("INFERQ_VISIBILITY_TIMEOUT", 300, "Seconds a taken job's lease lasts "
                                      "unrenewed: its worker renews it at every heartbeat, however long the job "
                                      "runs, so this bounds how long the jobs of a worker that died (and was not "
                                      "restarted under its name) or froze wait before another worker takes them.",
                                      minimum=1)
    batch_size: int = setting("INFERQ_BATCH_SIZE", 16, "Texts a worker may run as one batch: with a job, "
                              "it takes the jobs already waiting behind it while their texts fit, and never "
                              "waits for more (1: one job at a time).", minimum=1)

    @property
    def soft_time_limit(self) -> int:
        """The soft limit in force: as set, else 30 s under the hard limit."""
        hard = self.task_time_limit
        return self.task_soft_time_limit or (hard - 30 if hard > 30 else hard)


@dataclass(frozen=True)
class ModelSource(Section):
    """Which model to serve, and where built or exported models are cached."""

    model: str = setting("INFERQ_MODEL", DEFAULT_MODEL, "A hub id, a model directory, or offline:tiny / "
                         "offline:base (built here, random weights).")
    model_cache: str = setting("INFERQ_MODEL_CACHE", str(USER_CACHE_DIR / "models"),
                               "Where offline builds and ONNX exports are kept.",
                               shown="$XDG_CACHE_HOME/inferq/models (~/.cache/inferq/models)")


@dataclass(frozen=True)
class Webhooks(Section):
    """Signed completion callbacks: the API checks a job's callback_url, the workers deliver it."""

    webhook_secret: str = setting("INFERQ_WEBHOOK_SECRET", "", "HMAC-SHA256 key of the Inferq-Signature header "
                                  f"(at least {MIN_API_KEY_LENGTH} characters); unset: submits with a "
                                  "callback_url are refused (callbacks_disabled).")
    webhook_max_age_seconds: float = setting("INFERQ_WEBHOOK_MAX_AGE_SECONDS", 86400.0, "How long a callback is "
                                             "retried (backoff with jitter) before it is given up.", minimum=1)
    webhook_allowed_networks: tuple[str, ...] = setting(
        "INFERQ_WEBHOOK_ALLOWED_NETWORKS", (), "Comma-separated CIDRs a callback may reach although they are "
        "loopback, private, link-local or otherwise not public (unset: public addresses only).")
    webhook_timeout: float = setting("INFERQ_WEBHOOK_TIMEOUT", 10.0, "Seconds one callback POST may take.",
                                     minimum=0.1)

    def check(self) -> None:
        """Refuse a guessable secret and networks that do not parse."""
        import ipaddress

        if self.webhook_secret and len(self.webhook_secret) < MIN_API_KEY_LENGTH:
            raise ConfigError(f"INFERQ_WEBHOOK_SECRET is shorter than {MIN_API_KEY_LENGTH} characters")
        for cidr in self.webhook_allowed_networks:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ConfigError(f"INFERQ_WEBHOOK_ALLOWED_NETWORKS: {cidr!r} is not a network (CIDR)") from None


@dataclass(frozen=True)
class Worker(Celery, ModelSource, Webhooks):
    """A worker process: the model it runs, how, and when it gives up on a job."""

    precision: str = setting("INFERQ_PRECISION", "onnx-int8", "The inference path (docs/performance.md).",
                             choices=PRECISIONS)
    torch_threads: int = setting("INFERQ_TORCH_THREADS", 1, "Threads of one worker's inference (one per "
                                 "worker process: more oversubscribes the cores).", minimum=1)
    max_deliveries: int = setting("INFERQ_MAX_DELIVERIES", 3, "Starts of a job that never finishes before it "
                                  "is failed as a poison job.", minimum=1)
    test_faults: bool = setting("INFERQ_TEST_FAULTS", False, "Test only: texts that make a job sleep or kill "
                                "its worker (tasks/faults.py). Never in a deployment.")
    test_pass_seconds: float = setting("INFERQ_TEST_PASS_SECONDS", 0.0, "Test only, with INFERQ_TEST_FAULTS: "
                                       "each forward pass takes at least this long (a base-size model's pace on "
                                       "the tiny one).", minimum=0)
    test_run_log: str = setting("INFERQ_TEST_RUN_LOG", "", "Test only, with INFERQ_TEST_FAULTS: a directory "
                                "where each worker process appends a line per job state it stores (the crash "
                                "checker counts runs from them).")

    def check(self) -> None:
        """Refuse limits that would give a running job to a second worker or expire it while it runs."""
        hard, soft = self.task_time_limit, self.soft_time_limit
        if soft > hard:
            raise ConfigError(f"INFERQ_TASK_SOFT_TIME_LIMIT={soft} exceeds INFERQ_TASK_TIME_LIMIT={hard}")
        # A worker renews its jobs' leases at every heartbeat: a lease shorter than a few beats would
        # run out between two renewals, and a job still running would go to a second worker.
        if self.visibility_timeout < LEASE_BEATS * self.heartbeat_seconds:
            raise ConfigError(
                f"INFERQ_VISIBILITY_TIMEOUT={self.visibility_timeout}s must be at least {LEASE_BEATS} heartbeats "
                f"(INFERQ_HEARTBEAT_SECONDS={self.heartbeat_seconds:g}), or a running job's lease runs out between "
                "two renewals; raise the timeout or beat faster")
        if self.result_ttl < hard:
            raise ConfigError(f"INFERQ_RESULT_TTL={self.result_ttl}s is shorter than INFERQ_TASK_TIME_LIMIT="
                              f"{hard}s: a job could expire while it runs")


@dataclass(frozen=True)
class ApiKeys(Section):
    """The keys the API accepts."""

    api_keys: tuple[str, ...] = setting("INFERQ_API_KEYS", (), "Comma-separated API keys (at least "
                                        f"{MIN_API_KEY_LENGTH} characters each); unset: no key needed.")

    def check(self) -> None:
        """Refuse keys short enough to guess (never echoing one: start-up errors reach logs)."""
        short = [k for k in self.api_keys if len(k) < MIN_API_KEY_LENGTH]
        if short:
            raise ConfigError(f"INFERQ_API_KEYS has {len(short)} key(s) shorter than {MIN_API_KEY_LENGTH} characters")


@dataclass(frozen=True)
class ApiAddress(Section):
    """Where the API listens."""

    api_bind: str = setting("INFERQ_API_BIND", "127.0.0.1:5000", "host:port gunicorn listens on.")


@dataclass(frozen=True)
class Api(Redis, ApiKeys, ApiAddress, Webhooks):
    """The HTTP API: where it listens and what it accepts."""

    api_workers: int = setting("INFERQ_API_WORKERS", 2, "gunicorn worker processes.", minimum=1)
    api_threads: int = setting("INFERQ_API_THREADS", 32, "Threads per gunicorn worker (long-polls hold one).",
                               minimum=1)
    max_texts: int = setting("INFERQ_MAX_TEXTS", 256, "Texts one job may carry.", minimum=1)
    max_body_bytes: int = setting("INFERQ_MAX_BODY_BYTES", 1024 * 1024, "Largest request body (413 past it).",
                                  minimum=1)
    max_wait_seconds: float = setting("INFERQ_MAX_WAIT_SECONDS", 30.0, "Longest ?wait= a request may hold.",
                                      minimum=0)
    max_queue_depth: int = setting("INFERQ_MAX_QUEUE_DEPTH", 10000, "Waiting jobs in one lane (interactive "
                                   "or bulk) past which submits to that lane get 429.", minimum=1)
    retry_after: int = setting("INFERQ_RETRY_AFTER", 2, "Retry-After seconds of a 429.", minimum=1)
    redis_memory_high: float = setting("INFERQ_REDIS_MEMORY_HIGH", 0.8, "Share of Redis's maxmemory past which "
                                       "submits get 429, before Redis itself refuses writes (the rest is room for "
                                       "the results of jobs already accepted); 1: only Redis's own limit.",
                                       minimum=0.05)

    def check(self) -> None:
        """Refuse a memory threshold past Redis's own limit."""
        if self.redis_memory_high > 1:
            raise ConfigError(f"INFERQ_REDIS_MEMORY_HIGH={self.redis_memory_high:g} must be at most 1 "
                              "(a share of Redis's maxmemory)")


@dataclass(frozen=True)
class Client(ApiAddress):
    """The command-line client: which API to talk to, with which key."""

    api_url: str = setting("INFERQ_API_URL", "", "The API's URL (unset: from INFERQ_API_BIND).")
    api_key: str = setting("INFERQ_API_KEY", "", "The key the client sends (the API checks INFERQ_API_KEYS).")
    api_cert_sha256: str = setting("INFERQ_API_CERT_SHA256", "", "SHA-256 fingerprint of the API's TLS "
                                   "certificate, the only one accepted (a deployed cluster's self-signed one: "
                                   "`fab -r deploy status` prints it).")

    @property
    def url(self) -> str:
        """The API's base URL: as set, else the bind address (every interface: loopback)."""
        if self.api_url:
            return self.api_url.rstrip("/")
        host, _, port = self.api_bind.rpartition(":")
        if host in ("", "0.0.0.0", "::", "[::]"):
            host = "127.0.0.1"
        return f"http://{host}:{port}"


@dataclass(frozen=True)
class RedisServer(Section):
    """A Redis inferq runs itself (the local stack's, the orchestrator's)."""

    redis_appendfsync: str = setting("INFERQ_REDIS_APPENDFSYNC", "everysec", "AOF fsync policy: what a host "
                                     "crash can lose (docs/operations.md).", choices=APPENDFSYNC_MODES)


@dataclass(frozen=True)
class Stack(Redis, ModelSource, ApiKeys, Client, RedisServer):
    """The local stack (make run, make demo): its services, ports and state."""

    state_dir: str = setting("INFERQ_STATE_DIR", str(USER_STATE_DIR), "Where the stack keeps Redis's data, logs "
                             "and Flower's login.", shown="$XDG_STATE_HOME/inferq (~/.local/state/inferq)")
    workers: int = setting("WORKERS", 0, "Worker processes (0: one per core).", minimum=0)
    flower_bind: str = setting("INFERQ_FLOWER_BIND", "127.0.0.1:5555", "host:port Flower listens on.")
    ready_timeout: float = setting("INFERQ_STACK_READY_TIMEOUT", 600.0, "Seconds the stack may take to be "
                                   "ready before it gives up.", minimum=1)
    hf_hub_offline: bool = setting("HF_HUB_OFFLINE", False, "Hugging Face's own: never ask the hub.")
    transformers_offline: bool = setting("TRANSFORMERS_OFFLINE", False, "The same, transformers' older name.")

    @property
    def worker_count(self) -> int:
        """Workers to start: as set, else one per core."""
        return self.workers or os.cpu_count() or 1

    @property
    def external_redis(self) -> bool:
        """REDIS_URL (or INFERQ_BROKER_URL) set means "use that Redis": the stack starts none."""
        return bool(self.redis_url or self.broker_url)

    @property
    def hub_offline(self) -> bool:
        """The hub must not be asked."""
        return self.hf_hub_offline or self.transformers_offline


S = TypeVar("S", bound=Section)


def _parse(kind: Any, raw: str, meta: Mapping[str, Any]) -> Any:
    """One environment value as the field's type, within its bounds."""
    env, minimum, choices = meta["env"], meta["minimum"], meta["choices"]
    if kind is bool:
        if raw.lower() not in TRUE + FALSE:
            raise ConfigError(f"{env}={raw!r} is not one of {', '.join(TRUE + FALSE)}")
        return raw.lower() in TRUE
    if kind in (int, float):
        try:
            value = kind(raw)
        except ValueError:
            raise ConfigError(f"{env}={raw!r} is not {'an integer' if kind is int else 'a number'}") from None
        if minimum is not None and value < minimum:
            raise ConfigError(f"{env}={value} must be at least {minimum:g}")
        return value
    if kind == tuple[str, ...]:
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    if choices and raw.lower() not in choices:
        raise ConfigError(f"{env}={raw!r} is not one of {', '.join(choices)}")
    return raw.lower() if choices else raw


def load(section: type[S], environ: Mapping[str, str] | None = None) -> S:
    """Read a section from environ (default: this process's environment); raise ConfigError if unusable."""
    env = os.environ if environ is None else environ
    hints = typing.get_type_hints(section)
    values = {}
    for item in dataclasses.fields(section):
        raw = (env.get(item.metadata["env"]) or "").strip()
        if raw:  # unset and empty both mean "the default"
            values[item.name] = _parse(hints[item.name], raw, item.metadata)
    loaded = section(**values)
    for klass in type(loaded).__mro__:  # every section's own checks, once each
        if "check" in vars(klass):
            vars(klass)["check"](loaded)
    return loaded


_current: dict[type[Section], Section] = {}


def current(section: type[S]) -> S:
    """This process's settings of a section, read once (raises ConfigError)."""
    if section not in _current:
        _current[section] = load(section)
    return typing.cast(S, _current[section])


def require(*sections: type[Section]) -> None:
    """At a process's start: read its sections, or stop it with one line saying what to fix."""
    try:
        for section in sections:
            current(section)
    except ConfigError as exc:
        sys.stderr.write(f"inferq: invalid configuration: {exc}\n")
        raise SystemExit(2) from None


def markdown() -> str:
    """The settings table of docs/settings.md, one block per section."""
    out = ["# Settings", "", "Every setting is an environment variable, read by the processes of the sections "
           "that list it (`settings.py`). Empty means unset.", ""]
    for section in (Redis, Celery, ModelSource, Webhooks, Worker, ApiKeys, ApiAddress, Api, Client, RedisServer, Stack):
        own = [f for f in dataclasses.fields(section) if f.name in section.__annotations__]
        if not own:
            continue
        out += [f"## {section.__name__}", "", section.__doc__ or "", "",
                "| variable | default | meaning |", "| --- | --- | --- |"]
        for item in own:
            default = item.default
            shown = item.metadata["shown"] or ("" if default in ("", ()) else str(default))
            cell = f"`{shown}`" if shown else "(unset)"
            out.append(f"| `{item.metadata['env']}` | {cell} | {item.metadata['doc']} |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(markdown())
