"""The files a deploy writes on the hosts, rendered from the inventory and the secrets (pure functions)."""
from __future__ import annotations

from inferq.deploy.credentials import Secrets
from inferq.deploy.errors import DeployError
from inferq.deploy.inventory import Host, Inventory

WORKER_REDIS_USER = "inferq-worker"
"""The Redis ACL user the workers log in as; the API and Flower use the default user."""

WORKER_ACL = "~* &* +@all -@admin -flushall -flushdb -function -script|flush -script|kill"
"""Every key, channel and data command a Celery worker needs; no administration
(CONFIG, DEBUG, SHUTDOWN, ACL, MONITOR ... are @admin), no FLUSHALL/FLUSHDB, no
server-side functions: a compromised worker host can read and write jobs but
not reconfigure or wipe the orchestrator's Redis. Scripts (EVAL, EVALSHA,
SCRIPT LOAD) stay allowed because kombu's Redis transport takes a redis-py
Lock, which runs Lua (a worker without them stops with "no permissions to run
the 'evalsha' command"); Redis checks every command a script calls against
this same user, so a script cannot do what the user cannot."""


def redis_url(inventory: Inventory, secrets: Secrets, worker: bool = False) -> str:
    """The broker URL: the orchestrator's private address, as the default user or the workers' user."""
    orchestrator = inventory.orchestrator
    login = f"{WORKER_REDIS_USER}:{secrets.worker_redis_password}" if worker else f":{secrets.redis_password}"
    return f"redis://{login}@{orchestrator.private_ip}:{inventory.redis_port}/0"


def maxmemory(mem_total_bytes: int, fraction: float) -> int:
    """Redis's maxmemory on a host with mem_total_bytes of memory: fraction of it, in whole bytes."""
    return int(mem_total_bytes * fraction)


def redis_conf(inventory: Inventory, host: Host, secrets: Secrets, data_dir: str, memory_limit: int,
               appendfsync: str | None = None) -> str:
    """redis.conf for the orchestrator: private address, password, AOF, a memory limit, never evicting queued jobs.

    memory_limit: maxmemory in bytes (maxmemory() of the host's memory); the API
    refuses new jobs (429) before Redis gets there (INFERQ_REDIS_MEMORY_HIGH).
    appendfsync: the AOF fsync policy; by default INFERQ_REDIS_APPENDFSYNC where
    fab runs (docs/operations.md, "Guarantees", for the trade-off), as for the local stack.
    """
    if appendfsync is None:
        from inferq.settings import Durability, current

        appendfsync = current(Durability).appendfsync
    return "\n".join([
        # The private address for the workers, loopback for the API and for an admin on the host.
        f"bind {host.private_ip} 127.0.0.1",
        f"port {inventory.redis_port}",
        "protected-mode yes",
        f"requirepass {secrets.redis_password}",
        f"user {WORKER_REDIS_USER} on >{secrets.worker_redis_password} {WORKER_ACL}",
        "appendonly yes",
        f"appendfsync {appendfsync}",
        'save ""',
        # Bounded, so a full Redis refuses writes instead of meeting the OOM killer; and it
        # must refuse, never drop queued jobs. The API says 429 well before (INFERQ_REDIS_MEMORY_HIGH).
        f"maxmemory {memory_limit}",
        "maxmemory-policy noeviction",
        f'dir "{data_dir}"',
        "daemonize no",
        'logfile ""',
        "",
    ])


def env_file(values: dict[str, str]) -> str:
    """KEY=value lines, readable by systemd, docker compose and `set -a; . FILE`."""
    for key, value in values.items():
        # The same file feeds three parsers; refuse anything they would read differently.
        if any(ch in str(value) for ch in "\n'\"$`\\ #"):
            raise ValueError(f"{key} has a character env files cannot carry safely")
    return "".join(f"{key}={value}\n" for key, value in values.items())


def orchestrator_env(inventory: Inventory, secrets: Secrets) -> str:
    """Environment of the API and Flower."""
    return env_file({
        "REDIS_URL": redis_url(inventory, secrets),
        # Loopback only: the world reaches the API through the TLS proxy (deploy.proxy).
        "INFERQ_API_BIND": f"127.0.0.1:{inventory.api_port}",
        "INFERQ_API_KEYS": secrets.api_key,
        # Flower reads FLOWER_* variables: the login never shows on a command line.
        "FLOWER_BASIC_AUTH": f"{secrets.flower_user}:{secrets.flower_password}",
        "INFERQ_WEBHOOK_SECRET": secrets.webhook_secret,
        **settings_of(inventory),
    })


def worker_env(inventory: Inventory, secrets: Secrets) -> str:
    """Environment of every worker (compose's env_file): the broker as the workers' user, one torch thread."""
    return env_file({
        "REDIS_URL": redis_url(inventory, secrets, worker=True),
        "INFERQ_TORCH_THREADS": "1",
        # The workers sign the callbacks they deliver with it.
        "INFERQ_WEBHOOK_SECRET": secrets.webhook_secret,
        **settings_of(inventory),
    })


SECRET_SETTINGS = ("REDIS_URL", "INFERQ_API_KEYS", "INFERQ_WEBHOOK_SECRET", "FLOWER_BASIC_AUTH")
"""Variables whose values are the cluster's secrets: they come from the secrets file, never the inventory."""


def settings_of(inventory: Inventory) -> dict[str, str]:
    """The inventory's env (plain settings), refusing a secret there: the inventory is no place for one."""
    misplaced = sorted(set(inventory.env) & set(SECRET_SETTINGS))
    if misplaced:
        raise DeployError(f"the inventory's env sets {', '.join(misplaced)}: secrets come from the cluster's secrets "
                          "file (secrets/<cluster>/cluster-secrets.json, generated by fab); remove them from env")
    return dict(inventory.env)


def compose_dotenv(host: Host, image: str) -> str:
    """compose's .env: which image, and the host name the containers' Celery node names use."""
    return env_file({"INFERQ_IMAGE": image, "INFERQ_HOST": host.name})

