"""The deploy lock: one `fab deploy` or `fab update` at a time per cluster, held in a file on the orchestrator.

Two operators (or one operator's two terminals) rolling out at once would each
roll back the other's hosts. The lock is a file made with O_EXCL (the shell's
noclobber), naming who holds it and since when; a second deploy is refused in
one line naming both. A deploy that died leaves its lock behind: `--break-lock`
removes it, saying whose it was. Nothing in it is secret.
"""
from __future__ import annotations

import datetime
import getpass
import json
import os
import secrets
import shlex
import socket
from collections.abc import Iterator
from contextlib import contextmanager

from fabric import Connection

from inferq.deploy.connections import connect, root
from inferq.deploy.errors import DeployError
from inferq.deploy.inventory import Inventory
from inferq.deploy.layout import Report

LOCK_FILE = "deploy.lock"
"""The lock's name under the orchestrator's remote_dir."""


def holder(operation: str) -> dict:
    """What the lock says about this process: who, where, since when, doing what; and a token only it knows."""
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    return {"holder": f"{getpass.getuser()}@{socket.gethostname()} (pid {os.getpid()})", "since": now,
            "operation": operation, "token": secrets.token_hex(8)}


def read(c: Connection, path: str) -> dict | None:
    """The lock's contents, or None when nobody holds it."""
    found = root(c, f"cat {shlex.quote(path)} 2>/dev/null", warn=True)
    if not found.ok:
        return None
    try:
        return json.loads(found.stdout)
    except ValueError:
        return {"holder": "an unreadable lock", "since": "?", "operation": "?", "token": ""}


def acquire(c: Connection, inventory: Inventory, operation: str, break_lock: bool, report: Report) -> dict:
    """Take the lock (breaking a stale one if asked); refuse, in one line, while another holds it."""
    remote_dir = inventory.orchestrator.remote_dir
    path = f"{remote_dir}/{LOCK_FILE}"
    root(c, f"install -d -m 755 {shlex.quote(remote_dir)}")
    if break_lock:
        stale = read(c, path)
        if stale:
            root(c, f"rm -f {shlex.quote(path)}")
            report(f"broke the deploy lock of {stale['holder']} ({stale['operation']} since {stale['since']})")
    mine = holder(operation)
    # noclobber: the shell opens the file with O_EXCL, so of two deploys exactly one creates it.
    made = root(c, f"set -C; printf '%s\\n' {shlex.quote(json.dumps(mine))} > {shlex.quote(path)}", warn=True)
    if not made.ok:
        held = read(c, path) or {"holder": "someone", "since": "?", "operation": "a deploy"}
        raise DeployError(f"cluster {inventory.cluster} is locked by {held['holder']}, running {held['operation']} "
                          f"since {held['since']}: wait for it to finish; if it died, rerun with --break-lock")
    return mine


def release(c: Connection, inventory: Inventory, mine: dict) -> None:
    """Remove the lock if it is still ours (someone may have broken it meanwhile)."""
    path = f"{inventory.orchestrator.remote_dir}/{LOCK_FILE}"
    held = read(c, path)
    if held and held.get("token") == mine["token"]:
        root(c, f"rm -f {shlex.quote(path)}")


@contextmanager
def holding(inventory: Inventory, operation: str, break_lock: bool, report: Report) -> Iterator[None]:
    """Hold the cluster's deploy lock for the block."""
    with connect(inventory, inventory.orchestrator) as c:
        mine = acquire(c, inventory, operation, break_lock, report)
    try:
        yield
    finally:
        with connect(inventory, inventory.orchestrator) as c:
            release(c, inventory, mine)
