"""The cluster's secrets: generated once, kept locally in a mode-600 file, never printed.

The Redis password, Flower's basic-auth login and an API key reach the hosts
only inside env files written over SFTP with mode 600; no command line and
no log line carries them.
"""
from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

FLOWER_USER = "inferq"


@dataclass(frozen=True)
class Secrets:
    """What the cluster's services authenticate with."""

    redis_password: str
    flower_user: str
    flower_password: str
    api_key: str
    # The workers' own Redis user (see deploy.config_files.WORKER_ACL); empty only
    # in secrets files written before workers had one, and filled in on load.
    worker_redis_password: str = ""

    def __repr__(self) -> str:  # never leak a secret through a traceback or a log line
        return "Secrets(<hidden>)"


def path_of(secrets_dir: str | os.PathLike, cluster: str) -> Path:
    """Where a cluster's secrets are kept."""
    return Path(secrets_dir) / cluster / "cluster-secrets.json"


def load_or_create(secrets_dir: str | os.PathLike, cluster: str) -> Secrets:
    """The cluster's secrets, generated on first use and the same ever after."""
    path = path_of(secrets_dir, cluster)
    if path.exists():
        os.chmod(path, 0o600)
        stored = json.loads(path.read_text())
        if not stored.get("worker_redis_password"):
            stored["worker_redis_password"] = secrets.token_urlsafe(32)
            _write(path, stored)
        return Secrets(**stored)
    made = Secrets(redis_password=secrets.token_urlsafe(32), flower_user=FLOWER_USER,
                   flower_password=secrets.token_urlsafe(18), api_key=secrets.token_urlsafe(32),
                   worker_redis_password=secrets.token_urlsafe(32))
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    _write(path, asdict(made))
    return made


def _write(path: Path, values: dict) -> None:
    """Write the secrets file, mode 600 from its first byte, replacing any older one whole."""
    partial = path.with_suffix(".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(values, f)
    os.replace(partial, path)
