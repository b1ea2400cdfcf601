"""SSH connections to the inventory's hosts, and running commands on them as root.

Every connection checks the host's key against the known_hosts file beside
the inventory (deploy.host_keys) and refuses a host that is missing from it or
shows another key: no key is ever learned from the connection itself.
"""
from __future__ import annotations

import shlex
from pathlib import Path

from fabric import Config, Connection
from paramiko import BadHostKeyException, RejectPolicy, SSHException

from inferq.deploy import host_keys
from inferq.deploy.defaults import PROBE_SECONDS, SSH_CONNECT_ATTEMPTS, SSH_CONNECT_SECONDS, SSH_RETRY_SECONDS
from inferq.deploy.errors import DeployError
from inferq.deploy.inventory import Host, Inventory
from inferq.deploy.retry import retrying


def connect(inventory: Inventory, host: Host, probe: bool = False) -> Connection:
    """An open Fabric connection to host: the cluster's key only, the host's key pinned; retried while it boots.
    probe: one short attempt (PROBE_SECONDS), for asking whether the host is there at all."""
    pins = Path(inventory.known_hosts) if inventory.known_hosts else None
    if pins is None or not pins.is_file():
        raise DeployError(f"no pinned host keys for cluster {inventory.cluster} (known_hosts "
                          f"{inventory.known_hosts or 'not named in the inventory'}): run `inferq-provision up` "
                          "to write them; fab never trusts a key on first use")
    config = Config(overrides={"load_ssh_configs": False, "run": {"hide": True}})
    c = Connection(host.public_ip, user=inventory.user(host), port=host.ssh_port, config=config,
                   connect_timeout=PROBE_SECONDS if probe else SSH_CONNECT_SECONDS,
                   connect_kwargs={"key_filename": inventory.key_file, "look_for_keys": False,
                                   "allow_agent": False})
    # Fabric's client would add any key it meets (AutoAddPolicy): pin instead.
    c.client.set_missing_host_key_policy(RejectPolicy())
    c.client.get_host_keys().load(str(pins))
    where = f"{host.name} ({host_keys.host_pattern(host.public_ip, host.ssh_port)})"
    try:
        retrying(f"SSH to {where}", c.open, unreachable, 1 if probe else SSH_CONNECT_ATTEMPTS, SSH_RETRY_SECONDS,
                 SSH_RETRY_SECONDS * 8)
    except BadHostKeyException as exc:
        raise DeployError(
            f"{where} presented host key {host_keys.fingerprint(_line(exc.key))}, not the one pinned in {pins} "
            f"({host_keys.fingerprint(_line(exc.expected_key))}): the host was replaced or someone is in between; "
            "nothing was sent to it. If you replaced it, run `inferq-provision up` to pin its new key") from None
    except SSHException as exc:
        if "not found in known_hosts" in str(exc):
            raise DeployError(f"{where} has no pinned key in {pins}: run `inferq-provision up` to pin it; "
                              "nothing was sent to it") from None
        raise
    return c


def unreachable(exc: BaseException) -> str | None:
    """Why a connection attempt failed, when waiting may help (refused, timed out, reset): sshd not up yet."""
    if isinstance(exc, (OSError, EOFError)):
        return str(exc) or type(exc).__name__
    if isinstance(exc, SSHException) and not isinstance(exc, BadHostKeyException) and "banner" in str(exc):
        return str(exc)  # sshd accepted, then closed: it is starting (or refusing too many at once)
    return None


def _line(key) -> str:
    """A paramiko key as a known_hosts public key."""
    return f"{key.get_name()} {key.get_base64()}"


def root(c: Connection, command: str, **kwargs):
    """Run command as root: directly when we log in as root, else through passwordless sudo."""
    kwargs.setdefault("hide", True)
    if c.user == "root":
        return c.run(command, **kwargs)
    return c.sudo(f"sh -c {shlex.quote(command)}", **kwargs)


def apt_install(c: Connection, packages: str) -> None:
    """Install Debian packages, after cloud-init has finished (a fresh EC2 host is still upgrading at boot)."""
    root(c, "command -v cloud-init >/dev/null && cloud-init status --wait >/dev/null || true", timeout=900)
    root(c, f"apt-get -o DPkg::Lock::Timeout=300 update -qq && DEBIAN_FRONTEND=noninteractive "
            f"apt-get -o DPkg::Lock::Timeout=300 install -y -qq {packages}", timeout=1800)


def memory_of(c: Connection) -> int:
    """The host's memory in bytes (MemTotal): what Redis's maxmemory is a share of."""
    return int(root(c, "awk '/^MemTotal:/ {print $2}' /proc/meminfo").stdout.strip()) * 1024
