"""Flower's basic-auth credentials for the local stack: generated once, kept in a mode-600 file.

The credentials reach Flower through its FLOWER_BASIC_AUTH environment
variable, never a command-line argument (which ``ps`` shows to every user)
and never a log line: the stack prints only where the file is.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path

FLOWER_USER = "inferq"
"""The login name; the password is what must stay secret."""

CREDENTIALS_FILE = "flower-credentials"
"""File under the state directory holding ``user:password``."""


def credentials_path(state_dir: str | os.PathLike) -> Path:
    """Where the stack keeps Flower's credentials."""
    return Path(state_dir) / CREDENTIALS_FILE


def ensure_credentials(state_dir: str | os.PathLike) -> tuple[str, str]:
    """Return (user, password), generating and saving them (mode 600) on first use."""
    path = credentials_path(state_dir)
    if path.exists():
        user, _, password = path.read_text().strip().partition(":")
        if user and password:
            # Tighten a file someone copied in with looser permissions.
            os.chmod(path, 0o600)
            return user, password
    path.parent.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(18)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"{FLOWER_USER}:{password}\n")
    return FLOWER_USER, password
