"""The files a deploy writes on the hosts, rendered from the inventory and the secrets (pure functions)."""
from __future__ import annotations

from inferq import redis_acl
from inferq.deploy.credentials import Secrets
from inferq.deploy.errors import DeployError
from inferq.deploy.inventory import Host, Inventory

TLS_DIR = "etc/tls"
"""Under the host's remote_dir: Redis's certificate and key, and the cluster's CA (deploy/orchestrator.py)."""

REDIS_CA, REDIS_CERT, REDIS_KEY = "redis-ca.crt", "redis.crt", "redis.key"
"""File names, in TLS_DIR, of the cluster's CA, Redis's certificate from it, and its key."""

WORKER_CA_FILE, WORKER_CA_SECRET = "redis-ca.crt", "/run/secrets/redis_ca"
"""The cluster's CA beside docker-compose.yml on a worker host, and where the containers find it (a compose
secret)."""


def redis_url(inventory: Inventory, secrets: Secrets, role: str) -> str:
    """A role's Redis URL: TLS to the orchestrator's private address, as that role's user (inferq.redis_acl).
    With --ha only the user, password and database count: the Sentinels say where the primary is."""
    login = f"{redis_acl.user_name(role)}:{secrets.redis_passwords()[role]}"
    return f"rediss://{login}@{inventory.orchestrator.private_ip}:{inventory.redis_port}/0"


def maxmemory(mem_total_bytes: int, fraction: float) -> int:
    """Redis's maxmemory on a host with mem_total_bytes of memory: fraction of it, in whole bytes."""
    return int(mem_total_bytes * fraction)


def redis_conf(inventory: Inventory, host: Host, secrets: Secrets, data_dir: str, memory_limit: int,
               tls_dir: str, appendfsync: str | None = None, queue: str | None = None) -> str:
    """redis.conf for the orchestrator: TLS only, on the private address and loopback; one ACL user per role;
    AOF; a memory limit, never evicting queued jobs.

    tls_dir: where the host keeps REDIS_CERT, REDIS_KEY and REDIS_CA. memory_limit: maxmemory in bytes
    (maxmemory() of the host's memory); the API refuses new jobs (429) before Redis gets there
    (INFERQ_REDIS_MEMORY_HIGH). appendfsync: the AOF fsync policy; by default INFERQ_REDIS_APPENDFSYNC where
    fab runs (docs/operations.md, "Guarantees"), as for the local stack. queue: INFERQ_QUEUE of the
    inventory's env (the lanes the ACL names), else the default.
    """
    if appendfsync is None:
        from inferq.settings import Durability, current

        appendfsync = current(Durability).appendfsync
    if queue is None:
        from inferq.settings import RedisLink, load

        queue = load(RedisLink, inventory.env).queue
    addresses = list(dict.fromkeys([host.private_ip, "127.0.0.1"]))
    return "\n".join([
        # Redis 7.0 binds its plain and its TLS port to the same addresses: so there is no plain port at all
        # (port 0), and everything, loopback included, speaks TLS on the one port the workers reach.
        f"bind {' '.join(addresses)}",
        "port 0",
        f"tls-port {inventory.redis_port}",
        *tls_lines(tls_dir),
        "protected-mode yes",
        # The default user is the operator's (the admin password); no service logs in with it.
        f"requirepass {secrets.redis_password}",
        *redis_acl.acl_lines(secrets.redis_passwords(), queue),
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


def tls_lines(tls_dir: str) -> list[str]:
    """TLS of a Redis server or sentinel: its certificate from the cluster's CA; clients are not asked for one
    (each logs in as its role's user), a replica verifies its primary and speaks TLS to it."""
    return [
        f"tls-cert-file {tls_dir}/{REDIS_CERT}",
        f"tls-key-file {tls_dir}/{REDIS_KEY}",
        f"tls-ca-cert-file {tls_dir}/{REDIS_CA}",
        "tls-auth-clients no",
        "tls-protocols \"TLSv1.2 TLSv1.3\"",
        "tls-replication yes",
    ]


def replica_lines(secrets: Secrets, primary: str, port: int) -> list[str]:
    """What a replica adds to redis_conf() (the --ha layout): its primary, over TLS, as the replication user."""
    return [f"replicaof {primary} {port}", *replication_login_lines(secrets)]


def replication_login_lines(secrets: Secrets) -> list[str]:
    """How a node logs in to its primary, as the replication user: every --ha data node has them, since any of
    them may follow another one after a failover."""
    return [f"masteruser {redis_acl.user_name(redis_acl.REPLICATION)}",
            f"masterauth {secrets.replication_redis_password}"]


def data_node_lines() -> list[str]:
    """What an --ha data node adds to redis_conf() besides its login: a node that comes back syncs at once (not
    after the default 5 s wait for more replicas to share a transfer). Every node keeps the default
    replica-priority: Sentinel promotes by priority first and replication offset second, so with equal priorities
    it promotes the replica that holds the most; a job one replica acknowledged (WAIT 1) is never dropped by
    promoting the other one."""
    return ["repl-diskless-sync-delay 0"]


def sentinel_conf(secrets: Secrets, primary: str, port: int, sentinel_port: int, tls_dir: str,
                  master_name: str = "inferq", quorum: int = 2, down_after: float = 5.0,
                  failover_timeout: float = 30.0) -> str:
    """sentinel.conf (the --ha layout): TLS only, watching the primary as the sentinel user.

    down_after: seconds the primary may not answer before this Sentinel calls it down; failover_timeout:
    seconds a failover may take before the Sentinels try again (deploy: the inventory's Failover settings)."""
    return "\n".join([
        "port 0",
        f"tls-port {sentinel_port}",
        *tls_lines(tls_dir),
        f"sentinel monitor {master_name} {primary} {port} {quorum}",
        f"sentinel auth-user {master_name} {redis_acl.user_name(redis_acl.SENTINEL)}",
        f"sentinel auth-pass {master_name} {secrets.sentinel_redis_password}",
        f"sentinel down-after-milliseconds {master_name} {int(down_after * 1000)}",
        f"sentinel failover-timeout {master_name} {int(failover_timeout * 1000)}",
        f"sentinel parallel-syncs {master_name} 1",
        "",
    ])


def sentinel_settings(inventory: Inventory) -> dict[str, str]:
    """With --ha: where every process finds the primary (the three Sentinels) and how many replicas must hold a
    job before it counts (1: a primary and a replica). Nothing in the single layout."""
    if not inventory.ha:
        return {}
    return {"INFERQ_REDIS_SENTINELS": ",".join(f"{h.private_ip}:{inventory.sentinel_port}"
                                               for h in inventory.sentinel_hosts),
            "INFERQ_REDIS_MIN_REPLICAS": "1"}


def env_file(values: dict[str, str]) -> str:
    """KEY=value lines, readable by systemd, docker compose and `set -a; . FILE`."""
    for key, value in values.items():
        # The same file feeds three parsers; refuse anything they would read differently.
        if any(ch in str(value) for ch in "\n'\"$`\\ #"):
            raise ValueError(f"{key} has a character env files cannot carry safely")
    return "".join(f"{key}={value}\n" for key, value in values.items())


def orchestrator_env(inventory: Inventory, secrets: Secrets, tls_dir: str) -> str:
    """Environment of the API: Redis as the API's user, over TLS with the cluster's CA."""
    return env_file({
        "REDIS_URL": redis_url(inventory, secrets, redis_acl.API),
        "INFERQ_REDIS_CA_FILE": f"{tls_dir}/{REDIS_CA}",
        # Loopback only: the world reaches the API through the TLS proxy (deploy.proxy).
        "INFERQ_API_BIND": f"127.0.0.1:{inventory.api_port}",
        "INFERQ_API_KEYS": secrets.api_key,
        "INFERQ_WEBHOOK_SECRET": secrets.webhook_secret,
        **settings_of(inventory),
    })


def flower_env(inventory: Inventory, secrets: Secrets, tls_dir: str) -> str:
    """Environment of Flower and of the deploy's checks on the orchestrator (deploy/remote.py: ping the
    workers, the lanes' depth): Redis as Flower's user, over TLS with the cluster's CA."""
    return env_file({
        "REDIS_URL": redis_url(inventory, secrets, redis_acl.FLOWER),
        "INFERQ_REDIS_CA_FILE": f"{tls_dir}/{REDIS_CA}",
        # Flower reads FLOWER_* variables: the login never shows on a command line.
        "FLOWER_BASIC_AUTH": f"{secrets.flower_user}:{secrets.flower_password}",
        **settings_of(inventory),
    })


def worker_env(inventory: Inventory, secrets: Secrets) -> str:
    """Environment of every worker (compose's env_file): the broker as the workers' user over TLS (the CA is
    a compose secret of its own), one torch thread."""
    return env_file({
        "REDIS_URL": redis_url(inventory, secrets, redis_acl.WORKER),
        "INFERQ_REDIS_CA_FILE": WORKER_CA_SECRET,
        "INFERQ_TORCH_THREADS": "1",
        # The workers sign the callbacks they deliver with it.
        "INFERQ_WEBHOOK_SECRET": secrets.webhook_secret,
        **settings_of(inventory),
    })


SECRET_SETTINGS = ("REDIS_URL", "INFERQ_API_KEYS", "INFERQ_WEBHOOK_SECRET", "FLOWER_BASIC_AUTH", "INFERQ_REDIS_CA_FILE")
"""Variables whose values are the cluster's secrets: they come from the secrets file, never the inventory."""


def settings_of(inventory: Inventory) -> dict[str, str]:
    """The inventory's env (plain settings) over the layout's Sentinel settings, refusing a secret in env: the
    inventory is no place for one."""
    misplaced = sorted(set(inventory.env) & set(SECRET_SETTINGS))
    if misplaced:
        raise DeployError(f"the inventory's env sets {', '.join(misplaced)}: secrets come from the cluster's secrets "
                          "file (secrets/<cluster>/cluster-secrets.json, generated by fab); remove them from env")
    # The layout's Sentinels first: the operator's env may still set, say, INFERQ_REDIS_MIN_REPLICAS.
    return {**sentinel_settings(inventory), **inventory.env}


def compose_dotenv(host: Host, image: str) -> str:
    """compose's .env: which image, and the host name the containers' Celery node names use."""
    return env_file({"INFERQ_IMAGE": image, "INFERQ_HOST": host.name})

