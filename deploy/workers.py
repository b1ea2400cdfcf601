"""A worker host: the worker env file, then two workers (docker compose on AWS, processes in the process runtime)."""
from __future__ import annotations

from fabric import Connection

from inferq.deploy import config_files, release
from inferq.deploy.connections import apt_install, connect, root
from inferq.deploy.credentials import Secrets
from inferq.deploy.files import put_if_changed
from inferq.deploy.inventory import Host, Inventory
from inferq.deploy.layout import REPO, Layout, Report, layout
from inferq.deploy.services import Service, manager


def worker_services(inventory: Inventory, host: Host, where: Layout) -> list[Service]:
    """The process runtime's stand-ins for the compose services: the image's command, named like the containers."""
    return [Service(f"worker-{i}", [f"{where.bin}/inferq-worker", f"--hostname=worker@{host.name}-w{i}"],
                    f"{where.remote_dir}/worker.env", where.code)
            for i in range(1, inventory.containers_per_worker + 1)]


def deploy_worker(inventory: Inventory, host: Host, secrets: Secrets, report: Report) -> int:
    """Write the worker env and start the host's two workers (compose, or processes). Return changes made."""
    where = layout(inventory, host)
    with connect(inventory, host) as c:
        env_changed = put_if_changed(c, config_files.worker_env(inventory, secrets),
                                     f"{where.remote_dir}/worker.env", "600")
        changes = int(env_changed)
        if inventory.runtime == "docker":
            changes += docker_up(c, inventory, host, where)
            report(f"{host.name}: docker compose up -d ({changes} change(s))")
            return changes
        services = manager(inventory.runtime, where.remote_dir)
        for service in worker_services(inventory, host, where):
            outcome = services.ensure(c, service, env_changed)
            changes += outcome != "unchanged"
            report(f"{host.name}: {service.name} {outcome}")
    return changes


def docker_up(c: Connection, inventory: Inventory, host: Host, where: Layout) -> int:
    """AWS workers: Docker, the image of this release (built once per host), then `docker compose up -d`."""
    changes = 0
    if root(c, "command -v docker >/dev/null && docker compose version >/dev/null 2>&1", warn=True).failed:
        apt_install(c, "docker.io docker-buildx docker-compose-v2")
        changes += 1
    version, data = release.package(REPO)
    changes += release.install(c, where.remote_dir, version, data, with_venv=False)
    image = f"inferq-worker:{version}"
    if root(c, f"docker image inspect {image} >/dev/null 2>&1", warn=True).failed:
        root(c, f"cd {where.remote_dir}/current && docker build -q -f worker_image/Dockerfile -t {image} .",
             timeout=3600)
        changes += 1
    changes += put_if_changed(c, (REPO / "docker-compose.yml").read_text(), f"{where.remote_dir}/docker-compose.yml")
    changes += put_if_changed(c, config_files.compose_dotenv(host, image), f"{where.remote_dir}/.env")
    # compose recreates a container only when its configuration (image, env) changed.
    root(c, f"cd {where.remote_dir} && docker compose up -d --remove-orphans", timeout=600)
    return changes
