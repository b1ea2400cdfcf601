"""SSH host keys: made here, handed to each new instance in its user data, pinned in a known_hosts file.

The key a host proves itself with is never learned from the SSH connection
(no trust on first use): `up` generates it, cloud-init installs it before sshd
first starts (`ssh_keys` in the user data; no other key type is generated), and
the public half is written beside the inventory. A second `up` learns it again
from the instance's user data, through the EC2 API. The private half lives in
the user data only, which the instance's metadata service hands to processes on
that host (containers cannot reach it: one IMDS hop, deploy.settings.IMDS_HOP_LIMIT).
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

CLOUD_CONFIG = "#cloud-config\n"
"""First line of user data that cloud-init reads as configuration (the rest is JSON, which is YAML)."""


@dataclass(frozen=True)
class HostKey:
    """An ed25519 host key: the private half in OpenSSH's format, the public half as `ssh-ed25519 AAAA...`."""

    private: str
    public: str

    def __repr__(self) -> str:  # never print the private half
        return f"HostKey({self.public})"


def generate() -> HostKey:
    """A new ed25519 host key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return HostKey(private, public.decode())


def user_data(key: HostKey) -> str:
    """cloud-init user data installing key as the host's only SSH host key."""
    return CLOUD_CONFIG + json.dumps({
        "ssh_deletekeys": True,
        "ssh_genkeytypes": [],
        "ssh_keys": {"ed25519_private": key.private, "ed25519_public": key.public},
    })


def public_key_in(data: str) -> str | None:
    """The host public key that user data written by user_data() installs; None for any other user data."""
    if not data.startswith(CLOUD_CONFIG):
        return None
    try:
        public = json.loads(data[len(CLOUD_CONFIG):])["ssh_keys"]["ed25519_public"]
    except (ValueError, KeyError, TypeError):
        return None
    return public if isinstance(public, str) and public.startswith("ssh-ed25519 ") else None


def fingerprint(public: str) -> str:
    """The key's SHA256 fingerprint as ssh-keygen -l shows it."""
    blob = base64.b64decode(public.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def host_pattern(address: str, port: int) -> str:
    """How OpenSSH (and paramiko) name a host in known_hosts."""
    return address if port == 22 else f"[{address}]:{port}"


def write_known_hosts(path: str | os.PathLike, entries: list[tuple[str, int, str]]) -> Path:
    """Write (address, port, public key) entries as a known_hosts file, replacing it whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(f"{host_pattern(a, p)} {key}\n" for a, p, key in entries))
    tmp.replace(path)
    return path
