"""The inventory: which hosts exist, their roles and addresses; written by provisioning, read by Fabric."""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from inferq.deploy.defaults import (
    API_PORT,
    FLOWER_PORT,
    HTTPS_PORT,
    REDIS_MEMORY_FRACTION,
    REDIS_PORT,
    REMOTE_DIR,
    SENTINEL_PORT,
    SSH_PORT,
    SSH_USER,
)
from inferq.deploy.errors import DeployError

READY, PROVISIONING, TORN_DOWN = "ready", "provisioning", "torn-down"
"""An inventory's states: written before anything is created, complete, and after `down`."""


@dataclass
class Host:
    """One machine of the cluster."""

    name: str
    role: str  # "orchestrator" or "worker"
    public_ip: str
    private_ip: str
    instance_id: str = ""
    ssh_port: int = SSH_PORT
    remote_dir: str = REMOTE_DIR
    ssh_user: str = ""  # empty: the inventory's ssh_user


@dataclass
class Inventory:
    """The cluster as the Fabric tasks see it.

    runtime names how services run on the hosts (deploy.runtime): "docker" is
    AWS (systemd services on the orchestrator, the worker image under `docker
    compose` on the workers); "module:Class" names another Runtime, built with
    runtime_options (the tests' network-namespace lab names its own).
    known_hosts: the file of the hosts' pinned SSH keys (OpenSSH's format),
    beside the inventory; every connection checks the host against it.
    """

    cluster: str
    hosts: list[Host]
    key_file: str
    ssh_user: str = SSH_USER
    runtime: str = "docker"
    runtime_options: dict = field(default_factory=dict)
    region: str = ""
    state: str = READY
    known_hosts: str = ""
    api_port: int = API_PORT
    https_port: int = HTTPS_PORT
    flower_port: int = FLOWER_PORT
    redis_port: int = REDIS_PORT
    sentinel_port: int = SENTINEL_PORT
    redis_memory_fraction: float = REDIS_MEMORY_FRACTION
    containers_per_worker: int = 2
    env: dict = field(default_factory=dict)
    # role -> the AMI id `up` resolved once; hosts launched later use it, so replacements match their peers.
    amis: dict = field(default_factory=dict)
    # instance name -> the ClientToken of its RunInstances, kept until the instance is found by its tag.
    launch_tokens: dict = field(default_factory=dict)
    # The worker Auto Scaling group, when `up` made one (deploy.autoscaling): group, hook, bucket, region.
    autoscaling: dict = field(default_factory=dict)

    @property
    def orchestrators(self) -> list[Host]:
        """Every orchestrator host (each serves the API), in name order: one today, two with a second
        orchestrator. What clients of the public API use (operations.api_endpoints)."""
        return sorted((h for h in self.hosts if h.role == "orchestrator"), key=lambda h: h.name)

    @property
    def orchestrator(self) -> Host:
        """The first orchestrator: the only one, or with --ha the one that starts as Redis's primary and runs
        Flower (which one is the primary later is the Sentinels' to say)."""
        found = self.orchestrators
        if len(found) not in (1, 2):
            raise DeployError(f"the inventory has {len(found)} orchestrator hosts; it needs one, or two (--ha)")
        return found[0]

    @property
    def ha(self) -> bool:
        """The --ha layout: two orchestrators, Redis replicated and watched by three Sentinels (docs/deploy.md)."""
        return len(self.orchestrators) == 2

    @property
    def standby(self) -> Host | None:
        """With --ha, the worker host that also keeps a copy of Redis (a replica like the second orchestrator's)
        and runs the third Sentinel: the first worker host. None in the single layout."""
        if not self.ha:
            return None
        if not self.workers:
            raise DeployError("the --ha layout needs at least one worker host of its own (worker-1) for the third "
                              "Sentinel and Redis's second replica: run `inferq-provision up --ha --workers 1` or more")
        return self.workers[0]

    @property
    def data_hosts(self) -> list[Host]:
        """Hosts that run a Redis: the orchestrator; with --ha both orchestrators and the standby worker host."""
        return [*self.orchestrators, self.standby] if self.ha else [self.orchestrator]  # type: ignore[list-item]

    @property
    def sentinel_hosts(self) -> list[Host]:
        """Hosts that run a Sentinel: none in the single layout, the data hosts with --ha."""
        return self.data_hosts if self.ha else []

    @property
    def workers(self) -> list[Host]:
        """The worker hosts, in name order."""
        return sorted((h for h in self.hosts if h.role == "worker"), key=lambda h: h.name)

    def user(self, host: Host) -> str:
        """The login user on host."""
        return host.ssh_user or self.ssh_user


def known_hosts_beside(path: str | os.PathLike) -> Path:
    """Where the pinned host keys of the inventory at path are kept: state/inventory.json -> state/known_hosts."""
    return Path(path).with_name("known_hosts")


def write(inventory: Inventory, path: str | os.PathLike) -> Path:
    """Write the inventory as JSON, mode 600 (it names the key file and the hosts), atomically: Fabric may
    read it while provisioning reruns."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(asdict(inventory), indent=2) + "\n")
    os.chmod(tmp, 0o600)  # an older .tmp kept its mode through O_CREAT
    tmp.replace(path)
    return path


def merge(path: str | os.PathLike, **changes) -> Inventory:
    """Write the inventory at path with these fields changed and every other one kept (env, runtime_options,
    ports ...); a new inventory if there is none. Provisioning owns the hosts and state, the operator the rest."""
    path = Path(path)
    if path.exists():
        merged = replace(read(path), **changes)
    else:
        merged = Inventory(**changes)
    write(merged, path)
    return merged


def read(path: str | os.PathLike) -> Inventory:
    """Read an inventory; a missing or broken file is a DeployError saying what to run."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        hosts = [Host(**h) for h in data.pop("hosts")]
        return Inventory(hosts=hosts, **data)
    except FileNotFoundError:
        raise DeployError(f"no inventory at {path}: run `inferq-provision up` first") from None
    except (ValueError, TypeError, KeyError) as exc:
        raise DeployError(f"{path} is not an inventory inferq wrote: {exc}") from None


def read_ready(path: str | os.PathLike) -> Inventory:
    """The inventory of a cluster that is up; refuse one torn down or never finished (its addresses are not ours)."""
    inventory = read(path)
    where = f"cluster {inventory.cluster}" + (f" in {inventory.region}" if inventory.region else "")
    if inventory.state == TORN_DOWN:
        raise DeployError(f"{where} was torn down by `inferq-provision down` ({path}); its addresses may be "
                          "someone else's now: run `inferq-provision up` for a new cluster")
    if inventory.state != READY:
        raise DeployError(f"{where} is not ready ({path} says {inventory.state!r}): provisioning did not finish; "
                          "run `inferq-provision up` again, or `inferq-provision down`")
    return inventory
