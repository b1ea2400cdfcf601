"""How services run on the hosts: one Runtime object per cluster, chosen once from the inventory.

The AWS runtime ("docker") runs the orchestrator's Redis, API, Flower and TLS
proxy (nginx) as systemd units, the API and Flower from the current release's
own venv (deploy.release), and each worker host's workers as containers of the
worker image (built once here, shipped by digest) under docker compose. Another runtime subclasses Runtime and is named
in the inventory as "module:Class", built with the inventory's runtime_options:
the tests' network-namespace lab (tests/deploy/lab_runtime.py) is one.
"""
from __future__ import annotations

import importlib

from fabric import Connection

from inferq.deploy import image as images
from inferq.deploy import release
from inferq.deploy.connections import apt_install, root
from inferq.deploy.containers import Containers
from inferq.deploy.defaults import IMAGE_NAME, KEEP_IMAGES, KEEP_RELEASES
from inferq.deploy.errors import DeployError
from inferq.deploy.inventory import Host, Inventory
from inferq.deploy.layout import Layout, Report
from inferq.deploy.services import Systemd


class Runtime:
    """The AWS hosts: systemd on the orchestrator, the worker image under docker compose on the workers."""

    redis_server = "/usr/bin/redis-server"
    """systemd wants an absolute ExecStart (Debian's and Ubuntu's package puts it here)."""

    nginx = "/usr/sbin/nginx"
    """The TLS proxy in front of the API (Debian's nginx package)."""

    python = "/usr/bin/python3"
    """The host's Python that builds each release's venv (Debian 12's: 3.11, deploy.defaults.PYTHON_VERSION)."""

    packages = "redis-server python3-venv nginx"
    """What the orchestrator installs from its distribution (the tests install the same, scripts/system-deps.sh)."""

    def __init__(self, docker: str = "docker", compose: str = "docker compose",
                 build_args: dict | None = None, build_contexts: dict | None = None, keep_images: int = KEEP_IMAGES,
                 pip_args: list[str] | None = None):
        # docker: the command on the hosts and here (where the image is built); compose: on the hosts.
        self.docker, self.compose, self.keep_images = docker, compose, keep_images
        # worker_image/Dockerfile's ARGs and extra build contexts; empty: its defaults.
        self.build_args, self.build_contexts = dict(build_args or {}), dict(build_contexts or {})
        # Extra pip options of a release's install (where its packages come from); empty: PyPI.
        self.pip_args = list(pip_args or [])
        # What this operation ships (deploy.release), packed once by the operation that needs it.
        self.release: release.Release | None = None

    def shipping(self) -> release.Release:
        """The release this operation ships; set by the operation before anything is installed or built."""
        if self.release is None:
            raise DeployError("no release was packed for this operation (deploy.operations packs it first)")
        return self.release

    def layout(self, inventory: Inventory, host: Host) -> Layout:
        """The release under remote_dir/current, with its own venv inside it."""
        return Layout(host.remote_dir, f"{host.remote_dir}/current/venv", f"{host.remote_dir}/current")

    def service_manager(self, where: Layout):
        """What starts, restarts and reports the orchestrator's services."""
        return Systemd(where.remote_dir)

    def user(self, service: str) -> str:
        """The account a service runs as: redis for Redis, www-data for nginx's workers, inferq for the rest.

        nginx's master runs as root (it binds port 443 and reads the key) and its
        workers, which talk to clients, as this user.
        """
        return {"redis": "redis", "proxy": "www-data"}.get(service, "inferq")

    def prepare_orchestrator(self, c: Connection, inventory: Inventory, host: Host, where: Layout) -> int:
        """Packages, the service user, this release in a venv of its own (older ones pruned). Return changes made."""
        changes = 0
        if root(c, f"dpkg -s {self.packages} >/dev/null 2>&1", warn=True).failed:
            apt_install(c, self.packages)
            changes += 1
        # The packages' own instances would hold the ports; ours are inferq-redis and inferq-proxy.
        for unit in ("redis-server", "nginx"):
            if root(c, f"systemctl is-enabled --quiet {unit}", warn=True).ok:
                root(c, f"systemctl disable --now {unit}")
                changes += 1
        if root(c, "id inferq", warn=True).failed:
            root(c, f"useradd --system --home-dir {where.remote_dir} --shell /usr/sbin/nologin inferq")
            changes += 1
        extras = release.GROUP_EXTRAS if inventory.autoscaling else release.EXTRAS
        return changes + self.install_release(c, where, extras)

    def prepare_data_node(self, c: Connection, inventory: Inventory, host: Host) -> int:
        """A worker host that keeps a Redis replica and a Sentinel (--ha's standby): Redis from its distribution,
        the package's own instance disabled (ours is inferq-redis). Return changes made."""
        changes = 0
        if root(c, "dpkg -s redis-server >/dev/null 2>&1", warn=True).failed:
            apt_install(c, "redis-server")
            changes += 1
        for unit in ("redis-server", "redis-sentinel"):
            if root(c, f"systemctl is-enabled --quiet {unit}", warn=True).ok:
                root(c, f"systemctl disable --now {unit}")
                changes += 1
        return changes

    def install_release(self, c: Connection, where: Layout, extras: str = release.EXTRAS) -> int:
        """This operation's release in its own venv, made current if it installs (older ones pruned)."""
        made = self.shipping()
        changed = release.install(c, where.remote_dir, made.version, made.data, self.python, self.pip_args, extras)
        release.prune(c, where.remote_dir, KEEP_RELEASES)
        return int(changed)

    def prepare_worker(self, c: Connection, inventory: Inventory, host: Host) -> int:
        """Docker, its compose plugin and zstd (images arrive compressed) on a worker host, when missing."""
        if root(c, f"command -v zstd >/dev/null && command -v {self.docker.split()[0]} >/dev/null && "
                   f"{self.compose} version >/dev/null 2>&1", warn=True).ok:
            return 0
        apt_install(c, "docker.io docker-compose-v2 zstd")
        return 1

    def workers(self, inventory: Inventory, host: Host) -> Containers:
        """What runs a worker host's workers: its containers."""
        return Containers(inventory, host, self.layout(inventory, host), self.docker, self.compose, self.keep_images,
                          self.release)

    def existing_image(self, tag: str) -> images.Image:
        """An image already built on this machine, by tag (to roll out, or back to, a given one)."""
        found = images.local_id(self.docker, tag)
        if not found:
            raise DeployError(f"no image {tag} here: build it, or pick one of `{self.docker} images {IMAGE_NAME}`")
        return images.Image(tag, found)

    def prune_images(self, image: images.Image, report: Report) -> None:
        """Remove release images built here before the last few (image, now running, stays)."""
        removed = images.prune_local(self.docker, self.keep_images, image.tag)
        if removed:
            report(f"pruned here: {', '.join(removed)}")

    def build_image(self, report: Report) -> images.Image:
        """Build this release's worker image on this machine (reused if built before)."""
        return images.build(self.docker, self.shipping(), self.build_args, self.build_contexts, report)


def load(inventory: Inventory) -> Runtime:
    """The inventory's runtime, built once with its options."""
    if inventory.runtime == "docker":
        kind = Runtime
    else:
        module, _, name = inventory.runtime.partition(":")
        try:
            kind = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError, ValueError):
            raise DeployError(f"unknown runtime {inventory.runtime!r}: use \"docker\" or \"module:Class\"") from None
    try:
        return kind(**inventory.runtime_options)
    except TypeError as exc:
        raise DeployError(f"runtime {inventory.runtime!r} does not take these runtime_options: {exc}") from None
