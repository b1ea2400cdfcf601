"""The cluster's secrets: generated once, kept locally in a mode-600 file, never printed.

The Redis passwords, Flower's basic-auth login, an API key and the webhook
signing secret reach the hosts only inside env files written over SFTP with
mode 600; no command line and no log line carries them. `inferq-provision
down` removes them (forget), so a new cluster of the same name gets new ones.
"""
from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

FLOWER_USER = "inferq"

ADDED_LATER = ("worker_redis_password", "webhook_secret", "api_redis_password", "flower_redis_password",
               "replication_redis_password", "sentinel_redis_password")
"""Secrets newer than some secrets files: generated when such a file is loaded, the others kept."""


@dataclass(frozen=True)
class Secrets:
    """What the cluster's services authenticate with."""

    redis_password: str
    flower_user: str
    flower_password: str
    api_key: str
    # The workers' own Redis user (inferq.redis_acl, as every role's below); empty only
    # in secrets files written before workers had one, and filled in on load.
    worker_redis_password: str = ""
    # INFERQ_WEBHOOK_SECRET of the API and the workers (signed callbacks); filled in on load likewise.
    webhook_secret: str = ""
    # The other roles' Redis users (inferq.redis_acl): the API, Flower, a replica, a sentinel. redis_password
    # stays the admin's (Redis's default user), for the operator alone: no service logs in with it.
    api_redis_password: str = ""
    flower_redis_password: str = ""
    replication_redis_password: str = ""
    sentinel_redis_password: str = ""

    def redis_passwords(self) -> dict[str, str]:
        """Each role's Redis password, by role (inferq.redis_acl.ROLES)."""
        return {"api": self.api_redis_password, "worker": self.worker_redis_password,
                "flower": self.flower_redis_password, "replication": self.replication_redis_password,
                "sentinel": self.sentinel_redis_password}

    def __repr__(self) -> str:  # never leak a secret through a traceback or a log line
        return "Secrets(<hidden>)"


def token(nbytes: int) -> str:
    """A random URL-safe secret of nbytes that never starts with "-".

    token_urlsafe starts one in 64 with "-", which a command line takes for an
    option: `inferq --api-key <it>` then fails with a usage error.
    """
    while (made := secrets.token_urlsafe(nbytes)).startswith("-"):
        continue
    return made


def path_of(secrets_dir: str | os.PathLike, cluster: str) -> Path:
    """Where a cluster's secrets are kept."""
    return Path(secrets_dir) / cluster / "cluster-secrets.json"


def load_or_create(secrets_dir: str | os.PathLike, cluster: str) -> Secrets:
    """The cluster's secrets, generated on first use and the same ever after."""
    path = path_of(secrets_dir, cluster)
    if path.exists():
        os.chmod(path, 0o600)
        stored = json.loads(path.read_text())
        added = [key for key in ADDED_LATER if not stored.get(key)]
        if added:
            stored.update({key: token(32) for key in added})
            _write(path, stored)
        return Secrets(**stored)
    made = Secrets(redis_password=token(32), flower_user=FLOWER_USER, flower_password=token(18), api_key=token(32),
                   **{key: token(32) for key in ADDED_LATER})
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


def forget(secrets_dir: str | os.PathLike, cluster: str) -> bool:
    """Remove the cluster's secrets file (after teardown); True if there was one."""
    path = path_of(secrets_dir, cluster)
    existed = path.exists()
    path.unlink(missing_ok=True)
    return existed
