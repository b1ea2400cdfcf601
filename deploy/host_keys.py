"""SSH host keys: made by each host at first boot, read from its console through the EC2 API, pinned in known_hosts.

No private key ever leaves the host, and none is in the user data (which the
metadata service hands to any process on the host, and DescribeInstanceAttribute
to anyone allowed it). cloud-init generates the host key at first boot and
prints the public keys to the serial console (its keys-to-console module: a
block between "-----BEGIN SSH HOST KEY KEYS-----" and "-----END SSH HOST KEY
KEYS-----"); `up` reads that console with GetConsoleOutput, an authenticated AWS
call the host cannot forge for another one, and pins what it says in a known_hosts
file beside the inventory. Nothing is learned from an SSH connection (no trust
on first use): fab refuses a host that has no pin or shows another key.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from pathlib import Path

CLOUD_CONFIG = "#cloud-config\n"
"""First line of user data that cloud-init reads as configuration (the rest is JSON, which is YAML)."""

BEGIN, END = "-----BEGIN SSH HOST KEY KEYS-----", "-----END SSH HOST KEY KEYS-----"
"""The lines around the host's public keys on its console (cloud-init's write-ssh-key-fingerprints)."""

KEY = re.compile(r"(ssh-ed25519|ecdsa-sha2-nistp(?:256|384|521)|ssh-rsa) (AAAA[0-9A-Za-z+/]+=*)")
"""One public key on a console line (cloud-init logs each line with a prefix such as "ec2: ")."""


def user_data() -> str:
    """cloud-init user data: a fresh ed25519 host key made on the host, printed to the console; no secret in it."""
    return CLOUD_CONFIG + json.dumps({
        "ssh_deletekeys": True,
        "ssh_genkeytypes": ["ed25519"],
        "ssh": {"emit_keys_to_console": True},
        "ssh_key_console_blacklist": [],
    })


def keys_in_console(output: str) -> list[str]:
    """The host public keys ("type base64") of the last complete block a console shows; [] if none yet."""
    blocks: list[list[str]] = []
    current: list[str] | None = None
    for line in output.splitlines():
        if BEGIN in line:
            current = []
        elif END in line and current is not None:
            blocks.append(current)
            current = None
        elif current is not None and (found := KEY.search(line)):
            current.append(f"{found.group(1)} {found.group(2)}")
    # A reboot prints the block again: the last one is what the host holds now.
    return blocks[-1] if blocks else []


def private_material_in(text: str) -> bool:
    """Whether text holds anything that looks like a private key (what user data must never carry)."""
    return "PRIVATE KEY" in text or "_private" in text


def fingerprint(public: str) -> str:
    """The key's SHA256 fingerprint as ssh-keygen -l shows it."""
    blob = base64.b64decode(public.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def host_pattern(address: str, port: int) -> str:
    """How OpenSSH (and paramiko) name a host in known_hosts."""
    return address if port == 22 else f"[{address}]:{port}"


def read_known_hosts(path: str | os.PathLike) -> dict[str, list[str]]:
    """host pattern -> its pinned public keys, from a known_hosts file (empty if there is none)."""
    path = Path(path)
    found: dict[str, list[str]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3:
                found.setdefault(parts[0], []).append(f"{parts[1]} {parts[2]}")
    return found


def write_known_hosts(path: str | os.PathLike, entries: list[tuple[str, int, str]]) -> Path:
    """Write (address, port, public key) entries as a known_hosts file, replacing it whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(f"{host_pattern(a, p)} {key}\n" for a, p, key in entries))
    tmp.replace(path)
    return path
