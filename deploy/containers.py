"""A worker host's containers: docker-compose.yml's services, replaced one at a time.

Each service is recreated only when it is missing, stopped, or runs another
image or configuration than the one wanted; after each one the deploy waits
until its worker answers a Celery ping, so the host never has all of its
workers down at once. A container that exits or never answers fails the
release on this host: the services already switched go back to the image they
ran before, and the deploy stops with one line saying so.
"""
from __future__ import annotations

import shlex
from collections.abc import Callable
from functools import partial

from fabric import Connection

from inferq.deploy import config_files, nodes
from inferq.deploy import image as images
from inferq.deploy.connections import root
from inferq.deploy.defaults import KEEP_IMAGES
from inferq.deploy.errors import DeployError
from inferq.deploy.files import put_if_changed
from inferq.deploy.inventory import Host, Inventory
from inferq.deploy.layout import Layout, Report
from inferq.deploy.release import Release

PROJECT = "inferq"
"""The compose project (docker-compose.yml's `name`); its containers carry this label."""

Wait = Callable[[list[str], Callable[[], str | None]], str | None]
"""wait(nodes, failed): None once every node answers a ping, else why not (failed() is polled)."""


class Containers:
    """The workers of one host as containers of the worker image, run by docker compose."""

    def __init__(self, inventory: Inventory, host: Host, where: Layout, docker: str, compose: str,
                 keep_images: int = KEEP_IMAGES, shipped: Release | None = None):
        self.inventory, self.host, self.where = inventory, host, where
        self.docker, self.compose, self.keep_images = docker, compose, keep_images
        # The release whose docker-compose.yml the host runs (None: status and logs, which write nothing).
        self.shipped = shipped
        self.history = f"{where.remote_dir}/images.log"

    def services(self) -> list[str]:
        """The compose services of this host's workers, in order."""
        return [nodes.service(i) for i in range(1, self.inventory.containers_per_worker + 1)]

    def container(self, c: Connection, service: str) -> dict | None:
        """The service's container: id, state, exit code, restarts, image id; None if there is none."""
        label = (f"--filter label=com.docker.compose.project={PROJECT} "
                 f"--filter label=com.docker.compose.service={service}")
        found = root(c, f"{self.docker} ps -aq {label}", warn=True).stdout.split()
        if not found:
            return None
        fields = "{{.State.Status}} {{.State.ExitCode}} {{.RestartCount}} {{.Image}}"
        state, code, restarts, image = root(c, f"{self.docker} inspect --format '{fields}' {found[0]}").stdout.split()
        return {"id": found[0], "state": state, "exit_code": int(code), "restarts": int(restarts),
                "image": images.plain_id(image)}

    def current(self, c: Connection) -> images.Image | None:
        """The image the host's workers run now: the newest line of its image history, if the host still has it."""
        ran = root(c, f"cat {self.history} 2>/dev/null", warn=True).stdout.split()
        found = images.remote_id(c, self.docker, ran[-1]) if ran else None
        return images.Image(ran[-1], found) if found else None

    def configure(self, c: Connection, image: images.Image) -> bool:
        """Write the compose file and its .env (image, host); True if either changed."""
        if self.shipped is None:
            raise DeployError("no release to take docker-compose.yml from (deploy.operations packs it first)")
        compose_file = put_if_changed(c, self.shipped.file("docker-compose.yml"),
                                      f"{self.where.remote_dir}/docker-compose.yml")
        dotenv = put_if_changed(c, config_files.compose_dotenv(self.host, image.tag), f"{self.where.remote_dir}/.env")
        return compose_file or dotenv

    def recreate(self, c: Connection, service: str) -> None:
        """Replace one service's container (SIGTERM to the old one: its job goes back to the queue)."""
        up = f"cd {shlex.quote(self.where.remote_dir)} && {self.compose} up -d --no-deps"
        old = self.container(c, service)
        root(c, f"{up} --force-recreate {service}", timeout=600)
        now = self.container(c, service)
        if old and now and now["id"] == old["id"]:
            # The old container survived: podman-compose stops it, then removes it without -f, and one that
            # keeps exiting, started again by its restart policy in between, cannot be removed so; compose
            # then starts that one instead of creating the new one, and exits 0. It was stopped once
            # already (a worker's job went back then): remove it by force, and create the service anew.
            root(c, f"{self.docker} rm -f {old['id']}", timeout=120)
            root(c, f"{up} {service}", timeout=600)

    def failure(self, c: Connection, service: str, image: images.Image) -> str | None:
        """Why the service's container is not a healthy run of image, if it is not."""
        now = self.container(c, service)
        if now is None:
            return "no container"
        if now["image"] != image.id:
            return f"runs image {now['image'][:12]}"
        if now["state"] != "running" or now["restarts"]:
            return f"container {now['state']} (exit {now['exit_code']}, {now['restarts']} restart(s))"
        return None

    def roll(self, c: Connection, image: images.Image, changed: bool, wait: Wait, report: Report) -> int:
        """Run image in every service, one container at a time; roll back on failure. Return containers replaced."""
        previous = {}
        replaced = 0
        for index, service in enumerate(self.services(), start=1):
            now = self.container(c, service)
            if now and now["image"] == image.id and now["state"] == "running" and not changed:
                continue
            previous[service] = now["image"] if now else None
            self.recreate(c, service)
            replaced += 1
            reason = wait([nodes.node(self.host, index)], partial(self.failure, c, service, image))
            if reason:
                self.roll_back(c, image, previous, reason, report)
            report(f"{self.host.name}: {service} runs {image.tag} ({image.short})")
        return replaced

    def roll_back(self, c: Connection, image: images.Image, previous: dict, reason: str, report: Report) -> None:
        """Put back the image the replaced services ran before, then stop the deploy."""
        older = {p for p in previous.values() if p and p != image.id}
        what = f"{self.host.name}: {image.tag} failed its health check ({reason})"
        if not older:
            raise DeployError(f"{what}; no earlier image to roll back to")
        before = older.pop()
        tag = root(c, f"{self.docker} image inspect --format '{{{{index .RepoTags 0}}}}' {before}").stdout.strip()
        put_if_changed(c, config_files.compose_dotenv(self.host, tag), f"{self.where.remote_dir}/.env")
        for service in previous:
            self.recreate(c, service)
        images.record(c, self.history, tag)
        report(f"{what}; rolled back to {tag} ({before[:12]})")
        raise DeployError(f"{what}; rolled back to {tag} ({before[:12]})")

    def deploy(self, c: Connection, archive: images.Archive, image: images.Image, env_changed: bool, wait: Wait,
               report: Report) -> int:
        """Ship the image if the host lacks it, write the compose files, roll the containers. Return changes.

        A container is replaced when its image or configuration changed, never otherwise.
        """
        shipped = images.ship(c, self.docker, archive, image)
        if shipped:
            report(f"{self.host.name}: loaded {image.tag} ({image.short})")
        changed = self.configure(c, image) or env_changed
        changes = int(shipped) + int(changed) + self.roll(c, image, changed, wait, report)
        images.record(c, self.history, image.tag)
        removed = images.prune(c, self.docker, self.history, self.keep_images)
        if removed:
            report(f"{self.host.name}: pruned {', '.join(removed)}")
        return changes

    def status(self, c: Connection) -> list[dict]:
        """Each service: its state, and the id and tags of the image it runs."""
        found = []
        for service in self.services():
            now = self.container(c, service)
            if now is None:
                found.append({"service": service, "state": "missing", "image": None, "tags": ""})
                continue
            tags = root(c, f"{self.docker} image inspect --format '{{{{join .RepoTags \",\"}}}}' {now['image']}",
                        warn=True).stdout.strip()
            found.append({"service": service, "state": now["state"], "image": now["image"], "tags": tags})
        return found

    def logs(self, c: Connection, lines: int) -> list[tuple[str, str]]:
        """Each service and the last lines of its container's log."""
        out = []
        for service in self.services():
            now = self.container(c, service)
            text = root(c, f"{self.docker} logs --tail {int(lines)} {now['id']} 2>&1", warn=True).stdout if now else ""
            out.append((service, text))
        return out

