"""Writing files on a host only when they differ: the reason a second deploy changes nothing."""
from __future__ import annotations

import hashlib
import io
import shlex
from collections.abc import Callable

from fabric import Connection

from inferq.deploy.connections import root


def put_if_changed(c: Connection, content: str | bytes, path: str, mode: str = "644", owner: str = "root") -> bool:
    """Make path hold content with mode and owner; return True when anything had to change."""
    data = content.encode() if isinstance(content, str) else content
    digest = hashlib.sha256(data).hexdigest()
    quoted = shlex.quote(path)
    # owner is a name, or a numeric uid the host may have no name for (the worker image's user).
    have = root(c, f"test -f {quoted} && sha256sum {quoted} | cut -d' ' -f1 && stat -c '%a %U %u' {quoted}",
                warn=True).stdout.split()
    if have[:2] == [digest, mode.lstrip("0") or "0"] and owner in have[2:]:
        return False
    upload_then(c, data, lambda upload: f"install -D -m {mode} -o {owner} {upload} {quoted}")
    return True


def upload_then(c: Connection, data: bytes, command: Callable[[str], str]) -> None:
    """Upload data to a private temporary file, run command(its path) as root, then remove it."""
    # A fresh mode-700 directory (mktemp -d), so a secret is never readable by
    # others, not even for the moment before the command sets its mode.
    tmpdir = c.run("mktemp -d", hide=True).stdout.strip()
    try:
        c.put(io.BytesIO(data), f"{tmpdir}/upload")
        root(c, command(f"{tmpdir}/upload"))
    finally:
        c.run(f"rm -rf {tmpdir}", hide=True, warn=True)
