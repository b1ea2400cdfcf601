"""The parts processes share, each declared once: a process's settings hold the parts it reads."""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

from inferq.settings.parser import ConfigError, Section, setting


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

APPENDFSYNC_MODES = ("always", "everysec", "no")
"""Redis AOF fsync policies: what a host crash can lose (docs/operations.md, "Guarantees")."""

LOCAL_SENTINELS = 3
"""Sentinels inferq runs itself (inferq-stack --ha, the tests): a quorum of two survives losing any one."""

MIN_API_KEY_LENGTH = 16
"""Shorter API keys can be guessed; refuse them at start-up."""


def sentinel_address(address: str) -> tuple[str, int]:
    """A Sentinel's host:port ([v6]:port too) as (host, port); ConfigError naming the setting otherwise."""
    host, _, port = address.strip().rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"INFERQ_REDIS_SENTINELS: {address!r} is not host:port")
    return host, int(port)


@dataclass(frozen=True)
class RedisLink(Section):
    """Where the queue is: every server process (API, worker, Flower, the stack) connects to it."""

    url: str = setting("REDIS_URL", "", f"The Redis holding queue, results and job records (unset: "
                                        f"{LOCAL_REDIS_URL}; the local stack then starts its own).")
    broker_url: str = setting("INFERQ_BROKER_URL", "", "Celery's broker, when it is not REDIS_URL.")
    result_backend: str = setting("INFERQ_RESULT_BACKEND", "", "Celery's result backend, when it is not REDIS_URL.")
    queue: str = setting("INFERQ_QUEUE", "inferq", "The interactive lane's queue (a Redis list of that name); "
                         "the bulk lane's is this name + `.bulk`.")
    timeout: float = setting("INFERQ_REDIS_TIMEOUT", 1.5, "Seconds a Redis call may take before the "
                             "API answers 503 or a worker retries.", minimum=0.1)
    result_ttl: int = setting("INFERQ_RESULT_TTL", 24 * 3600, "Seconds a job's record and result are kept.",
                              minimum=1)
    heartbeat_seconds: float = setting("INFERQ_HEARTBEAT_SECONDS", 2.0, "How often a worker says it is alive "
                                       "(/readyz counts workers seen in the last three beats).", minimum=0.1)
    ca_file: str = setting("INFERQ_REDIS_CA_FILE", "", "With a `rediss://` URL: the PEM file of the CA that "
                           "signed Redis's certificate, the only one trusted (unset: the system's CAs); a "
                           "certificate that does not verify is refused.")
    sentinels: tuple[str, ...] = setting(
        "INFERQ_REDIS_SENTINELS", (), "Comma-separated host:port of Redis Sentinels: every process then finds the "
        "primary through them (the URLs' user, password and database still apply, their host:port does not; with a "
        "`rediss://` URL the Sentinels too are reached over TLS, checked against INFERQ_REDIS_CA_FILE); "
        "unset: no Sentinel, the URLs' Redis.")
    master_name: str = setting("INFERQ_REDIS_MASTER_NAME", "inferq", "The name the Sentinels monitor the "
                               "primary under (with INFERQ_REDIS_SENTINELS).")
    min_replicas: int = setting("INFERQ_REDIS_MIN_REPLICAS", 1, "With INFERQ_REDIS_SENTINELS: replicas that must "
                                "hold a job before the API answers 202, and a result before its worker "
                                "acknowledges the job (Redis's WAIT); 0: do not wait.", minimum=0)
    replica_timeout: float = setting("INFERQ_REDIS_REPLICA_TIMEOUT", 0.5, "Seconds the API and a worker wait "
                                     "for INFERQ_REDIS_MIN_REPLICAS replicas (the API then answers 503 "
                                     "replication_unavailable); less than INFERQ_REDIS_TIMEOUT.", minimum=0.01)

    def check(self) -> None:
        """Refuse Sentinel addresses that do not parse, and a replica wait the socket timeout would cut short."""
        for address in self.sentinels:
            sentinel_address(address)
        if self.sentinels and self.replica_timeout >= self.timeout:
            raise ConfigError(f"INFERQ_REDIS_REPLICA_TIMEOUT={self.replica_timeout:g} must be less than "
                              f"INFERQ_REDIS_TIMEOUT={self.timeout:g}: a WAIT longer than the socket timeout "
                              "fails as if Redis were away")

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """The Sentinels as (host, port)."""
        return [sentinel_address(address) for address in self.sentinels]

    @property
    def replicas_to_wait(self) -> int:
        """Replicas a write must reach before it counts (WAIT): only with Sentinel (a lone Redis has none)."""
        return self.min_replicas if self.sentinels else 0

    @property
    def broker(self) -> str:
        """The broker URL every process uses."""
        return self.with_tls(self.broker_url or self.url or LOCAL_REDIS_URL)

    @property
    def backend(self) -> str:
        """The result backend URL every process uses."""
        return self.with_tls(self.result_backend or self.url or LOCAL_REDIS_URL)

    def with_tls(self, url: str) -> str:
        """A rediss:// URL with its certificate check in its query (redis-py and Celery's backend read it there):
        ssl_cert_reqs=required always, ssl_ca_certs=INFERQ_REDIS_CA_FILE when set; any other URL as it is."""
        parts = urlsplit(url)
        if parts.scheme != "rediss":
            return url
        query = parse_qs(parts.query)
        added = {"ssl_cert_reqs": "required", **({"ssl_ca_certs": self.ca_file} if self.ca_file else {})}
        extra = {k: v for k, v in added.items() if k not in query}
        return parts._replace(query="&".join(filter(None, [parts.query, urlencode(extra)]))).geturl()

    def ssl_options(self, url: str) -> dict[str, object] | None:
        """Celery's broker_use_ssl / redis_backend_use_ssl for url when it speaks TLS (kombu and Flower read
        these, not the URL's query; kombu alone would skip the certificate check): None otherwise."""
        if urlsplit(url).scheme != "rediss":
            return None
        import ssl

        return {"ssl_cert_reqs": ssl.CERT_REQUIRED, **({"ssl_ca_certs": self.ca_file} if self.ca_file else {})}


@dataclass(frozen=True)
class Delivery(Section):
    """How jobs are delivered to workers, bounded and batched (celeryconfig.py gives these to Celery)."""

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

    name: str = setting("INFERQ_MODEL", DEFAULT_MODEL, "A hub id, a model directory, or offline:tiny / "
                        "offline:base (built here, random weights).")
    cache: str = setting("INFERQ_MODEL_CACHE", str(USER_CACHE_DIR / "models"),
                         "Where offline builds and ONNX exports are kept.",
                         shown="$XDG_CACHE_HOME/inferq/models (~/.cache/inferq/models)")


@dataclass(frozen=True)
class Webhooks(Section):
    """Signed completion callbacks: the API checks a job's callback_url, the workers deliver it."""

    secret: str = setting("INFERQ_WEBHOOK_SECRET", "", "HMAC-SHA256 key of the Inferq-Signature header "
                          f"(at least {MIN_API_KEY_LENGTH} characters); unset: submits with a "
                          "callback_url are refused (callbacks_disabled).")
    max_age_seconds: float = setting("INFERQ_WEBHOOK_MAX_AGE_SECONDS", 86400.0, "How long a callback is "
                                     "retried (backoff with jitter) before it is given up.", minimum=1)
    allowed_networks: tuple[str, ...] = setting(
        "INFERQ_WEBHOOK_ALLOWED_NETWORKS", (), "Comma-separated CIDRs a callback may reach although they are "
        "loopback, private, link-local or otherwise not public (unset: public addresses only).")
    timeout: float = setting("INFERQ_WEBHOOK_TIMEOUT", 10.0, "Seconds one callback POST may take.", minimum=0.1)

    def check(self) -> None:
        """Refuse a guessable secret and networks that do not parse."""
        if self.secret and len(self.secret) < MIN_API_KEY_LENGTH:
            raise ConfigError(f"INFERQ_WEBHOOK_SECRET is shorter than {MIN_API_KEY_LENGTH} characters")
        for cidr in self.allowed_networks:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ConfigError(f"INFERQ_WEBHOOK_ALLOWED_NETWORKS: {cidr!r} is not a network (CIDR)") from None


@dataclass(frozen=True)
class ApiKeys(Section):
    """The keys the API accepts."""

    accepted: tuple[str, ...] = setting("INFERQ_API_KEYS", (), "Comma-separated API keys (at least "
                                        f"{MIN_API_KEY_LENGTH} characters each); unset: no key needed.")

    def check(self) -> None:
        """Refuse keys short enough to guess (never echoing one: start-up errors reach logs)."""
        short = [k for k in self.accepted if len(k) < MIN_API_KEY_LENGTH]
        if short:
            raise ConfigError(f"INFERQ_API_KEYS has {len(short)} key(s) shorter than {MIN_API_KEY_LENGTH} characters")


@dataclass(frozen=True)
class ApiAddress(Section):
    """Where the API listens."""

    bind: str = setting("INFERQ_API_BIND", "127.0.0.1:5000", "host:port gunicorn listens on.")


@dataclass(frozen=True)
class Durability(Section):
    """What a Redis inferq runs itself (the local stack's, the orchestrator's) may lose in a crash."""

    # Decision: `always` by default. Under `everysec`, Redis 7.0 answers writes it has postponed while a
    # background fsync runs (aof.c, flushAppendOnlyFile), so even a Redis *process* crash can lose accepted
    # jobs, not only a host crash: with fdatasync slowed to 300 ms, each kill inside a background fsync lost
    # thousands of acknowledged writes, `always` none (tests/reliability/test_aof_slow_disk.py;
    # docs/operations.md, "What can be lost").
    appendfsync: str = setting("INFERQ_REDIS_APPENDFSYNC", "always", "AOF fsync policy: `always` loses nothing "
                               "accepted when Redis or its host crashes; `everysec` is faster but can lose up "
                               "to about 2 s of accepted jobs, even in a Redis process crash (docs/operations.md).",
                               choices=APPENDFSYNC_MODES)


MIN_DOWN_AFTER_SECONDS = 1.5
"""The shortest down-after inferq accepts. A Sentinel PINGs an instance once a second, and a primary it has just
promoted only one second after the switch; with a down-after of one second or less, whether that first answer
comes back before the Sentinel checks is a race. Lost, the new primary is called down and the Sentinels fail
over again (back to the old primary, if it has come back as a replica): seen in tests/reliability/test_failover.py
on two cores, and redis/redis#8607. Half a second beyond the PING leaves a busy host room to answer."""


@dataclass(frozen=True)
class Failover(Section):
    """How the Sentinels inferq runs itself (the local stack's --ha, the tests') find a primary lost, and replace it."""

    down_after: float = setting("INFERQ_SENTINEL_DOWN_AFTER_SECONDS", 2.0, "Seconds a primary may not answer "
                                "the Sentinels before they call it down and promote its replica "
                                f"(at least {MIN_DOWN_AFTER_SECONDS:g}).")
    failover_timeout: float = setting("INFERQ_SENTINEL_FAILOVER_TIMEOUT_SECONDS", 10.0, "Seconds a failover may "
                                      "take before the Sentinels try again (Sentinel's failover-timeout).",
                                      minimum=1)
    quorum: int = setting("INFERQ_SENTINEL_QUORUM", 2, f"Sentinels (of the {LOCAL_SENTINELS} inferq runs) that "
                          "must agree the primary is down.", minimum=1)

    def check(self) -> None:
        """Refuse a quorum the Sentinels could never reach (no failover would ever happen), and a down-after
        so short that the Sentinels call a primary they have just promoted down, and fail over again."""
        if self.down_after < MIN_DOWN_AFTER_SECONDS:
            raise ConfigError(
                f"INFERQ_SENTINEL_DOWN_AFTER_SECONDS={self.down_after:g} is too short: a Sentinel first PINGs a "
                "newly promoted primary one second after the failover, so it would call that primary down and "
                f"fail over again (redis/redis#8607); use {MIN_DOWN_AFTER_SECONDS:g} or more")
        if self.quorum > LOCAL_SENTINELS:
            raise ConfigError(f"INFERQ_SENTINEL_QUORUM={self.quorum} is more than the {LOCAL_SENTINELS} Sentinels "
                              "inferq runs: no failover could ever happen")
