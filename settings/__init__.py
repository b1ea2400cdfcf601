"""inferq's settings: typed, read from the environment, one object per kind of process.

Each process reads its settings once when it starts (``settings.require(settings.Worker)`` in the
worker's main, ``settings.Api`` in the API's ...), and a value it cannot run with stops it with one
line naming the variable. A process's object holds the parts it reads (parts.py: a worker's redis,
delivery, model and webhooks) beside its own fields (processes.py). Importing this package reads
nothing and never exits, so the command-line client is never stopped by a server-only setting.

Decision: a small parser of our own (parser.py) rather than pydantic-settings. Every setting is one
flat value from one environment variable; this keeps the client's install to requests and tqdm,
gives one spelling for booleans, errors that name the variable as the user wrote it, and sections
that tests load from a plain mapping. ``python -m inferq.settings`` prints docs/settings.md (page.py).
"""
from inferq.settings.page import markdown
from inferq.settings.parser import FALSE, TRUE, ConfigError, Section, current, load, require, setting
from inferq.settings.parts import (
    APPENDFSYNC_MODES,
    DEFAULT_MODEL,
    LOCAL_REDIS_URL,
    MIN_API_KEY_LENGTH,
    USER_CACHE_DIR,
    USER_STATE_DIR,
    ApiAddress,
    ApiKeys,
    Delivery,
    Durability,
    Failover,
    ModelSource,
    RedisLink,
    Webhooks,
)
from inferq.settings.processes import LEASE_BEATS, PRECISIONS, Api, Client, Stack, Worker

__all__ = [
    "APPENDFSYNC_MODES", "DEFAULT_MODEL", "FALSE", "LEASE_BEATS", "LOCAL_REDIS_URL", "MIN_API_KEY_LENGTH",
    "PRECISIONS", "TRUE", "USER_CACHE_DIR", "USER_STATE_DIR",
    "Api", "ApiAddress", "ApiKeys", "Client", "ConfigError", "Delivery", "Durability", "Failover", "ModelSource",
    "RedisLink", "Section", "Stack", "Webhooks", "Worker",
    "current", "load", "markdown", "require", "setting",
]
