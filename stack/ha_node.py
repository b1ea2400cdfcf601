"""Start one data node of ``inferq-stack --ha`` as the Sentinels say it should be: the primary, or a replica.

supervisord restarts a Redis that died at once. Restarted so, the old primary would come back as a primary
from its own AOF before the Sentinels even called it down (no failover), and its replica would then resync
from it: the writes of the last fsync interval, which WAIT had counted on the replica, would be gone from
both. So a node that ran before in this stack run first waits until the Sentinels name another node primary
(at most down-after plus the failover timeout) and starts as its replica (``replicaof`` in its config);
only when they still name it then (no replica to promote) does it start as the primary from its own files. A
node's first start in a run waits for nothing. Then this process becomes redis-server (exec), so
supervisord's signals reach Redis itself.

``python -m inferq.stack.ha_node CONFIG --run RUN_ID --sentinels H:P,... --master-name NAME
--wait SECONDS``
"""
from __future__ import annotations

import argparse
import os
import re
import time
from pathlib import Path

import redis

from inferq.settings.parts import sentinel_address
from inferq.stack.redis_server import find_binary

MARKER = "ha-node.run"
"""In the node's data directory: the stack run it last started in."""


def primary_named(sentinels: list[tuple[str, int]], master_name: str) -> tuple[str, int] | None:
    """Where the first Sentinel that answers says the primary is; None if none answers."""
    for host, port in sentinels:
        try:
            client = redis.Redis(host=host, port=port, socket_timeout=1, socket_connect_timeout=1)
            reply = client.sentinel_get_master_addr_by_name(master_name)
        except (redis.RedisError, OSError):
            continue
        if reply:
            named_host, named_port = reply  # type: ignore[misc]
            return (named_host.decode() if isinstance(named_host, bytes) else str(named_host)), int(named_port)
    return None


def with_replicaof(config: str, primary: tuple[str, int] | None) -> str:
    """config with its replicaof line for primary (none: no replicaof line)."""
    kept = [line for line in config.splitlines() if not re.match(r"\s*(replicaof|slaveof)\s", line)]
    if primary:
        kept.append(f"replicaof {primary[0]} {primary[1]}")
    return "\n".join(kept) + "\n"


def own_port(config: str) -> int:
    match = re.search(r"^\s*port\s+(\d+)", config, re.M)
    if not match:
        raise SystemExit("ha_node: the config names no port")
    return int(match.group(1))


def start_as(path: Path, config: str, sentinels: list[tuple[str, int]], master_name: str, wait: float) -> None:
    """A restarted node: wait (at most wait seconds) until the Sentinels name another node primary, then write
    it into the config as this node's primary; if they still name this node, leave it the primary."""
    port, deadline = own_port(config), time.monotonic() + wait
    while True:
        primary = primary_named(sentinels, master_name)
        if primary is not None and primary[1] != port:
            break
        if time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    if primary is None:
        print("ha_node: restarted; no Sentinel answers: starting as configured", flush=True)
        return
    is_self = primary[1] == port
    path.write_text(with_replicaof(config, None if is_self else primary))
    print(f"ha_node: restarted; the Sentinels name {primary[0]}:{primary[1]} primary: starting as "
          f"{'the primary' if is_self else 'its replica'}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m inferq.stack.ha_node")
    parser.add_argument("config", type=Path)
    parser.add_argument("--run", required=True, help="this stack run's id: a node started before in it waits")
    parser.add_argument("--sentinels", required=True)
    parser.add_argument("--master-name", required=True)
    parser.add_argument("--wait", type=float, required=True,
                        help="seconds a restarted node waits at most for the Sentinels to promote its replica")
    args = parser.parse_args(argv)
    config = args.config.read_text()
    marker = args.config.parent / MARKER
    restarted = marker.exists() and marker.read_text() == args.run
    marker.write_text(args.run)
    if restarted:
        start_as(args.config, config, [sentinel_address(a) for a in args.sentinels.split(",")], args.master_name,
                 args.wait)
    binary = find_binary()
    os.execv(binary, [binary, str(args.config)])


if __name__ == "__main__":
    main()
