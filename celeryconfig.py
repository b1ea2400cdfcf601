"""The one place inferq reads its settings.

Every process (API, worker, Flower, CLI, deploy tooling) imports this module;
no other module reads ``os.environ``. The lowercase names are Celery's own
settings (``app.config_from_object("celeryconfig")`` picks them up); the
UPPER_CASE names are inferq's. Each comes from an environment variable with
a default that works on a developer machine.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Mapping


class ConfigError(ValueError):
    """A setting has a value inferq cannot run with."""


@dataclass(frozen=True)
class Settings:
    """inferq's settings, parsed and checked."""

    redis_url: str
    broker_url: str
    result_backend: str
    queue: str
    model: str
    model_cache: str
    precision: str
    batch_size: int
    batch_wait_ms: float
    torch_threads: int
    max_texts: int
    max_body_bytes: int
    max_wait_seconds: float
    result_ttl_seconds: int
    soft_time_limit: int
    hard_time_limit: int
    visibility_timeout: int
    heartbeat_seconds: float
    redis_socket_timeout: float
    state_dir: str
    stack_workers: int
    flower_bind: str
    api_url: str
    external_redis: bool
    hub_offline: bool
    stack_ready_timeout: float
    client_api_key: str
    api_bind: str
    api_workers: int
    api_threads: int
    max_queue_depth: int
    retry_after_seconds: int
    max_deliveries: int
    api_keys: tuple[str, ...]
    redis_appendfsync: str
    test_faults: bool


DEFAULT_MODEL = "distilbert-base-uncased-finetuned-sst-2-english"
"""What users with a network get: the SST-2 sentiment model from the hub."""

PRECISIONS = ("fp32", "int8", "onnx-fp32", "onnx-int8")
"""Inference paths a worker can run: torch fp32, torch int8 dynamic quantization,
or ONNX Runtime fp32 / int8 (exported from the same weights; README "Performance")."""

APPENDFSYNC_MODES = ("always", "everysec", "no")
"""Redis AOF fsync policies: what a host crash can lose (README "Guarantees")."""

MIN_API_KEY_LENGTH = 16
"""Shorter API keys can be guessed; refuse them at start-up."""


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = env.get(name, "")
    if raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise ConfigError(f"{name}={value} must be at least {minimum}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    raw = env.get(name, "")
    if raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if value < minimum:
        raise ConfigError(f"{name}={value} must be at least {minimum}")
    return value


def _api_keys(raw: str) -> tuple[str, ...]:
    keys = tuple(k.strip() for k in raw.split(",") if k.strip())
    short = [k for k in keys if len(k) < MIN_API_KEY_LENGTH]
    if short:
        # Never echo a key, not even a bad one: start-up errors end up in logs.
        raise ConfigError(
            f"INFERQ_API_KEYS has {len(short)} key(s) shorter than {MIN_API_KEY_LENGTH} characters"
        )
    return keys


def _appendfsync(raw: str) -> str:
    mode = raw.lower()
    if mode not in APPENDFSYNC_MODES:
        raise ConfigError(f"INFERQ_REDIS_APPENDFSYNC={raw!r} is not one of {', '.join(APPENDFSYNC_MODES)}")
    return mode


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = (env.get(name) or "0").strip().lower()
    if raw not in ("0", "1", "true", "false", "yes", "no"):
        raise ConfigError(f"{name}={raw!r} is not 0 or 1")
    return raw in ("1", "true", "yes")


TRUTHY = ("1", "true", "yes", "on")
"""How Hugging Face spells "set" for its own flags (HF_HUB_OFFLINE=1)."""


def _url_of_bind(bind: str) -> str:
    host, _, port = bind.rpartition(":")
    # A server bound to every interface is reached on loopback from this machine.
    if host in ("", "0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"
    return f"http://{host}:{port}"


def _stack_settings(env: Mapping[str, str]) -> dict:
    """Settings of the local stack (``make run``) and of the command-line client."""
    project = os.path.dirname(os.path.abspath(__file__))
    api_bind = env.get("INFERQ_API_BIND") or "127.0.0.1:5000"
    return dict(
        state_dir=env.get("INFERQ_STATE_DIR") or os.path.join(project, "state"),
        stack_workers=_int(env, "WORKERS", os.cpu_count() or 1),
        flower_bind=env.get("INFERQ_FLOWER_BIND") or "127.0.0.1:5555",
        api_url=(env.get("INFERQ_API_URL") or _url_of_bind(api_bind)).rstrip("/"),
        # REDIS_URL set means "use that Redis": the stack then starts none of its own.
        external_redis=bool(env.get("REDIS_URL") or env.get("INFERQ_BROKER_URL")),
        hub_offline=any((env.get(name) or "").strip().lower() in TRUTHY
                        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")),
        stack_ready_timeout=_float(env, "INFERQ_STACK_READY_TIMEOUT", 600.0, minimum=1.0),
        # The key the command-line client sends (the API checks INFERQ_API_KEYS).
        client_api_key=env.get("INFERQ_API_KEY") or "",
    )


def load_settings(env: Mapping[str, str]) -> Settings:
    """Parse and check settings from an environment mapping; raise ConfigError if unusable."""
    redis_url = env.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    # onnx-int8: the fastest path measured here, agreeing with fp32 (README "Performance").
    precision = (env.get("INFERQ_PRECISION") or "onnx-int8").lower()
    if precision not in PRECISIONS:
        raise ConfigError(
            f"INFERQ_PRECISION={precision!r} is not one of {', '.join(PRECISIONS)}"
        )
    hard = _int(env, "INFERQ_TASK_TIME_LIMIT", 300)
    soft = _int(env, "INFERQ_TASK_SOFT_TIME_LIMIT", max(1, hard - 30) if hard > 30 else hard)
    visibility = _int(env, "INFERQ_VISIBILITY_TIMEOUT", 3600)
    settings = Settings(
        redis_url=redis_url,
        broker_url=env.get("INFERQ_BROKER_URL") or redis_url,
        result_backend=env.get("INFERQ_RESULT_BACKEND") or redis_url,
        queue=env.get("INFERQ_QUEUE") or "inferq",
        model=env.get("INFERQ_MODEL") or DEFAULT_MODEL,
        model_cache=env.get("INFERQ_MODEL_CACHE") or os.path.join(
            os.path.dirname(os.path.abspath(__file__)), ".cache", "models"
        ),
        precision=precision,
        # Micro-batching (README "Performance"): 1 runs each job alone with prefetch 1.
        batch_size=_int(env, "INFERQ_BATCH_SIZE", 1),
        batch_wait_ms=_float(env, "INFERQ_BATCH_WAIT_MS", 10.0),
        torch_threads=_int(env, "INFERQ_TORCH_THREADS", 1),
        max_texts=_int(env, "INFERQ_MAX_TEXTS", 256),
        max_body_bytes=_int(env, "INFERQ_MAX_BODY_BYTES", 1024 * 1024),
        max_wait_seconds=_float(env, "INFERQ_MAX_WAIT_SECONDS", 30.0),
        result_ttl_seconds=_int(env, "INFERQ_RESULT_TTL", 24 * 3600),
        soft_time_limit=soft,
        hard_time_limit=hard,
        visibility_timeout=visibility,
        heartbeat_seconds=_float(env, "INFERQ_HEARTBEAT_SECONDS", 2.0, minimum=0.1),
        redis_socket_timeout=_float(env, "INFERQ_REDIS_TIMEOUT", 1.5, minimum=0.1),
        **_stack_settings(env),
        api_bind=env.get("INFERQ_API_BIND") or "127.0.0.1:5000",
        api_workers=_int(env, "INFERQ_API_WORKERS", 2),
        api_threads=_int(env, "INFERQ_API_THREADS", 32),
        max_queue_depth=_int(env, "INFERQ_MAX_QUEUE_DEPTH", 10000),
        retry_after_seconds=_int(env, "INFERQ_RETRY_AFTER", 2),
        max_deliveries=_int(env, "INFERQ_MAX_DELIVERIES", 3),
        api_keys=_api_keys(env.get("INFERQ_API_KEYS", "")),
        redis_appendfsync=_appendfsync(env.get("INFERQ_REDIS_APPENDFSYNC") or "everysec"),
        test_faults=_flag(env, "INFERQ_TEST_FAULTS"),
    )
    check(settings)
    return settings


def check(settings: Settings) -> None:
    """Refuse combinations that would lose or duplicate work."""
    if settings.soft_time_limit > settings.hard_time_limit:
        raise ConfigError(
            f"INFERQ_TASK_SOFT_TIME_LIMIT={settings.soft_time_limit} exceeds "
            f"INFERQ_TASK_TIME_LIMIT={settings.hard_time_limit}"
        )
    # Redis redelivers an unacknowledged message after the visibility timeout.
    # If that came before the hard limit, a job still running would be handed
    # to a second worker while the first is busy with it.
    if settings.visibility_timeout <= settings.hard_time_limit:
        raise ConfigError(
            f"INFERQ_VISIBILITY_TIMEOUT={settings.visibility_timeout}s must be longer than "
            f"INFERQ_TASK_TIME_LIMIT={settings.hard_time_limit}s, or a running job is "
            "redelivered to another worker; raise the visibility timeout or lower the limit"
        )
    if settings.result_ttl_seconds < settings.hard_time_limit:
        raise ConfigError(
            f"INFERQ_RESULT_TTL={settings.result_ttl_seconds}s is shorter than "
            f"INFERQ_TASK_TIME_LIMIT={settings.hard_time_limit}s: a job could expire while it runs"
        )


try:
    SETTINGS = load_settings(os.environ)
    """The settings of this process, read once at import."""
except ConfigError as _exc:
    # Every inferq process imports this module first: fail at start-up with
    # one clear line rather than a traceback, and never run misconfigured.
    sys.stderr.write(f"inferq: invalid configuration: {_exc}\n")
    raise SystemExit(2) from None

# --- Celery's own settings (lowercase names only; see Celery's docs) ---
broker_url = SETTINGS.broker_url
result_backend = SETTINGS.result_backend
task_default_queue = SETTINGS.queue
# JSON only: a pickle message pushed into the queue must never be executed.
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
result_accept_content = ["json"]
# At-least-once: acknowledge after the result is stored, one message at a time,
# and give the message back if the worker process dies under it.
task_acks_late = True
task_reject_on_worker_lost = True
# With micro-batching a worker must hold up to INFERQ_BATCH_SIZE unacknowledged
# messages to batch them; without it (the default), one.
worker_prefetch_multiplier = SETTINGS.batch_size
# No STARTED state: it cost every job a read and a write of its result key and
# one more wake-up of its long-polls. The worker records who started a job in
# the same round trip as its delivery count (tasks/deliveries.py), and the API
# answers "running" from that; Flower still sees task-started events.
task_track_started = False
result_expires = SETTINGS.result_ttl_seconds
task_time_limit = SETTINGS.hard_time_limit
task_soft_time_limit = SETTINGS.soft_time_limit
broker_transport_options = {
    "visibility_timeout": SETTINGS.visibility_timeout,
    "socket_timeout": SETTINGS.redis_socket_timeout,
    "socket_connect_timeout": SETTINGS.redis_socket_timeout,
    # A job whose worker died is given back once the visibility timeout has
    # passed; scan for such jobs often enough that the scan adds little to it.
    "unacked_restore_interval": max(1, min(10, SETTINGS.visibility_timeout // 4)),
    "unacked_restore_throttle": 1,
    # The scan holds a lock in Redis for the milliseconds it takes. A lock left
    # by a worker that died holding it (or restored with Redis's AOF after a
    # crash) blocks every worker's scan until it expires: kombu's default of
    # 300 s held jobs of a killed worker for minutes after a Redis restart.
    "unacked_mutex_expire": max(1, min(60, SETTINGS.visibility_timeout // 2)),
    # An acknowledgement that cannot reach Redis is retried this long, then left
    # to the visibility timeout; the worker goes on either way (tasks/redis_transport.py).
    "ack_retry_seconds": min(5.0, SETTINGS.visibility_timeout / 2),
}
result_backend_transport_options = {"visibility_timeout": SETTINGS.visibility_timeout}
redis_socket_timeout = SETTINGS.redis_socket_timeout
redis_socket_connect_timeout = SETTINGS.redis_socket_timeout
broker_connection_retry_on_startup = True
# A worker cut off from Redis keeps trying to reconnect rather than exiting
# after a fixed number of attempts: the outage may outlast them (README "Guarantees").
broker_connection_max_retries = None
# A result that cannot be stored because Redis is away is retried until Redis
# returns (Celery's default result_backend_max_retries is unbounded), never
# turned into a failure: the job is acknowledged only after its result is stored.
result_backend_always_retry = True
broker_connection_timeout = SETTINGS.redis_socket_timeout
# A publish that cannot reach Redis fails fast, so the API can answer 503
# instead of holding the client.
task_publish_retry_policy = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}
worker_hijack_root_logger = False
worker_send_task_events = True
# Flower learns of a job from the worker's task-received event onwards. A
# task-sent event from the API would cost each submit another publish, for a
# state ("queued") that GET /jobs/<id> and the queue-depth metric already show.
task_send_sent_event = False
