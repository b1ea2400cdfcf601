"""SSH connections to the inventory's hosts, and running commands on them as root."""
from __future__ import annotations

import shlex

from fabric import Config, Connection

from inferq.deploy.inventory import Host, Inventory


def connect(inventory: Inventory, host: Host) -> Connection:
    """A Fabric connection to host with the cluster's key (and no agent or other keys)."""
    # Host keys: first contact trusts and remembers the key for this run
    # (Fabric's default policy); EC2 hosts are new on every provisioning.
    config = Config(overrides={"load_ssh_configs": False, "run": {"hide": True}})
    return Connection(host.public_ip, user=inventory.ssh_user, port=host.ssh_port, config=config,
                      connect_timeout=20,
                      connect_kwargs={"key_filename": inventory.key_file, "look_for_keys": False,
                                      "allow_agent": False})


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
