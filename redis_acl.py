"""Who may do what in Redis: one ACL user per role, each an allow-list of commands, keys and channels.

The deploy writes these users into the orchestrator's redis.conf (deploy/config_files.py) and the tests
start a real redis-server with the very same lines (tests/test_redis_acl.py), so what is proved there is
what runs. Every key and channel below comes from contract.py (inferq's keys) and broker/wire.py
(Celery's and kombu's); every command is one that role's code (or the Celery, kombu, redis-py and Flower
code it runs) sends, found by reading that code and checked by running the whole product under these
users with Redis's ACL LOG empty.

How Redis checks (7.0): a command not in the user's list is refused (NOPERM); so is any key argument that
matches none of the user's key patterns, and any channel that matches none of its channel patterns (a
PSUBSCRIBE pattern must be one of them exactly). EVAL/EVALSHA is checked for the KEYS it declares, and
then every redis.call inside the script again as that same user, with the keys it really touches, declared
or not: a script can do nothing its caller could not do command by command. Nobody but the admin (Redis's
default user, the operator's) may run FLUSHALL, FLUSHDB, SWAPDB, SELECT, KEYS, SCAN, CONFIG, DEBUG, SHUTDOWN,
MONITOR, ACL, MIGRATE, RENAME, SCRIPT FLUSH/KILL, FUNCTION, CLIENT KILL, REPLICAOF (bar Sentinel's, below).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from inferq import contract
from inferq.broker import wire

API, WORKER, FLOWER, REPLICATION, SENTINEL = "api", "worker", "flower", "replication", "sentinel"
ROLES = (API, WORKER, FLOWER, REPLICATION, SENTINEL)
"""Every role, each logged in as its own user (user_name())."""

USER_PREFIX = "inferq-"

PIDBOX_EXCHANGE, REPLY_EXCHANGE, EVENT_EXCHANGE = "celery.pidbox", "reply.celery.pidbox", "celeryev"
"""Celery's remote-control broadcast, its replies and its events (kombu fanout exchanges on pub/sub, but for
the replies: a direct exchange, one Redis list per asker)."""

CONNECTION = ("ping", "auth", "hello", "client|setname", "client|getname", "client|id", "echo", "quit", "reset")
"""What every client may send about its own connection."""

SCRIPTS = ("eval", "evalsha", "script|load", "script|exists")
"""Running Lua (broker/scripts.py; redis-py's Lock, which kombu's visibility-timeout scan takes): the script's
commands are checked as the caller's own. Never SCRIPT FLUSH or KILL, never FUNCTION."""

PUBSUB = ("subscribe", "unsubscribe", "psubscribe", "punsubscribe")

TRANSACTIONS = ("multi", "exec", "discard", "watch", "unwatch")
"""redis-py's pipelines are MULTI/EXEC; kombu's visibility-timeout scan and the API's idempotent submit WATCH."""


def user_name(role: str) -> str:
    """The ACL user of a role: inferq-api, inferq-worker ..."""
    return USER_PREFIX + role


@dataclass(frozen=True)
class Role:
    """What one role may do: commands, keys it may read and write, keys it may only read, channels."""

    name: str
    commands: tuple[str, ...]
    keys: tuple[str, ...] = ()
    read_keys: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()

    @property
    def user(self) -> str:
        return user_name(self.name)

    def rules(self) -> str:
        """The ACL rules, from nothing: every permission is listed, none inherited."""
        return " ".join(["resetkeys", "resetchannels", "-@all",
                         *(f"+{c}" for c in self.commands),
                         *(f"~{k}" for k in self.keys),
                         *(f"%R~{k}" for k in self.read_keys),
                         *(f"&{c}" for c in self.channels)])

    def line(self, password: str) -> str:
        """The redis.conf line of this user, with its password's SHA-256 (the plain password is not in the file)."""
        return f"user {self.user} on #{password_hash(password)} {self.rules()}"


def password_hash(password: str) -> str:
    """The SHA-256 hex Redis keeps of a password (`#<hash>` in an ACL rule)."""
    return hashlib.sha256(password.encode()).hexdigest()


def _key(template: str) -> str:
    """A key pattern from a contract key template: inferq:job:{} -> inferq:job:*."""
    return template.format("*")


def roles(queue: str = "inferq", db: int = 0) -> dict[str, Role]:
    """Each role's permissions, for the lanes of queue (INFERQ_QUEUE) in database db (kombu's channel prefix)."""
    lanes = tuple(contract.lane_queues(queue).values())
    prefix = f"/{db}."  # kombu's fanout_prefix: every fanout channel is named /<db>.<exchange>[/<routing key>]
    pidbox_channel = prefix + PIDBOX_EXCHANGE
    events = prefix + EVENT_EXCHANGE + "/*"
    # kombu's routing tables (_kombu.binding.<exchange>), the permanent members of each
    # (_kombu.binding_permanent.<exchange>) and the deadlines of expiring ones (_kombu.binding_deadlines).
    bindings = wire.BINDING_KEY.format("").rstrip(".") + "*"
    # The lists of remote control: a node's own (<node>.celery.pidbox, declared, never filled: broadcasts go
    # over pub/sub) and each asker's replies (<asker's id>.reply.celery.pidbox).
    replies = "*." + PIDBOX_EXCHANGE
    results = wire.RESULT_KEY_PREFIX + "*"
    metrics = contract.METRICS_PREFIX + "*"
    return {
        # The API: records jobs, queues them (LPUSH onto a lane, never through kombu), waits for results on
        # their channels, cancels (broker/scripts.CANCEL), answers /metrics and /readyz.
        API: Role(API, (
            *CONNECTION, *SCRIPTS, *TRANSACTIONS, "psubscribe", "punsubscribe",
            "get", "mget", "set", "del", "exists", "expire", "incr", "incrby", "decrby",
            # LREM: a refused submit (429) takes its message off the lane again, DECR uncounts it.
            "lpush", "rpush", "lrem", "llen", "hexists", "hgetall", "hlen", "zcount", "zrangebyscore", "publish",
            # LRANGE: the scaling signal (deploy/backlog.py, run with the API's env) counts the oldest jobs' texts.
            "lrange",
            "wait",  # with replicas: a job is accepted once INFERQ_REDIS_MIN_REPLICAS hold it (api/store.py)
            "info"),  # INFO memory: the 429 before Redis's own limit (read-only, no secrets)
            keys=(_key(contract.JOB_KEY), _key(contract.CANCEL_KEY), _key(contract.CALLBACK_KEY),
                  _key(contract.IDEMPOTENCY_KEY), contract.WAKE_KEY, metrics, results, *lanes,
                  wire.UNACKED_KEY),  # CANCEL declares it, and a script's declared keys need read and write
            read_keys=(contract.WORKERS_KEY, wire.UNACKED_INDEX_KEY),
            channels=(results,)),
        # A worker: takes jobs (broker/scripts.TAKE), holds and renews them, stores results and metrics,
        # delivers callbacks, beats, answers Celery's remote control and sends Celery's events.
        WORKER: Role(WORKER, (
            *CONNECTION, *SCRIPTS, *TRANSACTIONS, *PUBSUB,
            "get", "mget", "set", "setex", "del", "exists", "expire", "pexpire", "incr", "incrby", "decrby",
            "wait",  # with replicas: a result reaches INFERQ_REDIS_MIN_REPLICAS before its job is acknowledged
            "lpush", "rpush", "lpop", "rpop", "brpop", "lrange", "llen", "ltrim", "lrem",
            "hset", "hget", "hmget", "hgetall", "hdel", "hexists", "hincrby", "hincrbyfloat", "hlen",
            "sadd", "srem", "smembers", "scard", "sismember",
            "zadd", "zrem", "zscore", "zcount", "zrange", "zrangebyscore", "zrevrangebyscore", "zremrangebyscore",
            "publish", "time"),
            keys=(*lanes, contract.WAKE_KEY, contract.MALFORMED_KEY, _key(contract.DELIVERIES_KEY),
                  _key(contract.HOLDING_KEY), _key(contract.CANCEL_KEY), _key(contract.CALLBACK_KEY),
                  contract.WORKERS_KEY, metrics, results, wire.UNACKED_KEY, wire.UNACKED_INDEX_KEY,
                  wire.UNACKED_MUTEX_KEY, bindings, replies),
            read_keys=(_key(contract.JOB_KEY),),
            channels=(pidbox_channel, events, results)),  # (no gossip: the workers receive no events)
        # Flower: Celery's events, remote control (inspect, ping) and its replies, the lanes' lengths.
        # Its replies' queues expire: kombu refreshes and sweeps their routing tables with scripts (TIME, ZADD ...).
        # Every kombu client also runs kombu's scan for expired leases (a lock, then the index): Flower may take
        # the lock and read the index, never give a job back (the workers do; a lease Flower finds expired
        # first fails that one scan of Flower's, and a worker's scan gives the job back).
        FLOWER: Role(FLOWER, (
            *CONNECTION, *SCRIPTS, *PUBSUB, *TRANSACTIONS, "lpush", "rpush", "lpop", "rpop", "brpop", "llen", "del",
            "exists", "pexpire", "sadd", "smembers", "srem", "zadd", "zrem", "zrange", "zrangebyscore", "publish",
            "get", "mget", "set", "time"),
            # Its event receiver's queue (celeryev.<id>: declared, never filled, events come over pub/sub).
            keys=(bindings, replies, EVENT_EXCHANGE + ".*", wire.UNACKED_MUTEX_KEY),
            read_keys=(*lanes, results, wire.UNACKED_INDEX_KEY),
            channels=(pidbox_channel, events)),
        # A replica of the primary (the --ha layout): the replication stream, nothing else.
        REPLICATION: Role(REPLICATION, ("ping", "auth", "hello", "psync", "replconf")),
        # A sentinel watching the primary and its replicas (the --ha layout), as Redis's documentation lists it.
        SENTINEL: Role(SENTINEL, (
            "ping", "auth", "hello", "client|setname", "client|getname", "client|id", "client|kill", "info",
            "role", "multi", "exec", "slaveof", "replicaof", "config|rewrite", "script|kill", "subscribe",
            "publish"),
            channels=("__sentinel__:hello",)),
    }


def acl_lines(passwords: dict[str, str], queue: str = "inferq", db: int = 0) -> list[str]:
    """redis.conf's user lines: one per role in passwords (role -> password)."""
    made = roles(queue, db)
    return [made[role].line(password) for role, password in passwords.items()]
