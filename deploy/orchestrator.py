"""The orchestrator host: Redis (password, AOF, private bind, noeviction), the API and Flower as services."""
from __future__ import annotations

from fabric import Connection

from inferq.deploy import config_files, release
from inferq.deploy.connections import apt_install, root
from inferq.deploy.credentials import Secrets
from inferq.deploy.files import put_if_changed
from inferq.deploy.inventory import Host, Inventory
from inferq.deploy.layout import REPO, Layout, Report, layout
from inferq.deploy.services import Service, manager


def orchestrator_services(inventory: Inventory, host: Host, where: Layout) -> list[Service]:
    """Redis, the API under gunicorn, Flower: the local stack's commands."""
    aws = inventory.runtime == "docker"
    env = f"{where.remote_dir}/etc/orchestrator.env"
    return [
        # systemd wants an absolute ExecStart; the process runtime finds redis-server on PATH.
        Service("redis", ["/usr/bin/redis-server" if aws else "redis-server", f"{where.remote_dir}/etc/redis.conf"],
                "", where.remote_dir,
                user="redis" if aws else "root"),
        Service("api", [f"{where.bin}/gunicorn", "-c", "python:inferq.api.gunicorn_conf", "inferq.api:create_app()"],
                env, where.code, user="inferq" if aws else "root"),
        Service("flower", [f"{where.bin}/celery", "-A", "inferq.celery_app", "flower",
                           f"--port={inventory.flower_port}", f"--address={host.private_ip}"],
                env, where.code, user="inferq" if aws else "root"),
    ]


def prepare_orchestrator(c: Connection, inventory: Inventory, host: Host, where: Layout) -> int:
    """AWS only: packages, the service user, the release in a venv. Return changes made."""
    changes = 0
    if root(c, "dpkg -s redis-server python3-venv >/dev/null 2>&1", warn=True).failed:
        apt_install(c, "redis-server python3-venv")
        changes += 1
    # Debian's own redis-server instance would hold the port; ours is inferq-redis.
    if root(c, "systemctl is-enabled --quiet redis-server", warn=True).ok:
        root(c, "systemctl disable --now redis-server")
        changes += 1
    if root(c, "id inferq", warn=True).failed:
        root(c, f"useradd --system --home-dir {where.remote_dir} --shell /usr/sbin/nologin inferq")
        changes += 1
    version, data = release.package(REPO)
    changes += release.install(c, where.remote_dir, version, data, with_venv=True)
    return changes


def deploy_orchestrator(c: Connection, inventory: Inventory, secrets: Secrets, report: Report) -> int:
    """Configure Redis, the API and Flower; start or restart what changed. Return changes made."""
    host = inventory.orchestrator
    where = layout(inventory, host)
    aws = inventory.runtime == "docker"
    changes = prepare_orchestrator(c, inventory, host, where) if aws else 0
    data_dir = f"{where.remote_dir}/redis"
    root(c, f"install -d -m 700 -o {'redis' if aws else 'root'} {data_dir}")
    redis_conf = config_files.redis_conf(inventory, host, secrets, data_dir)
    conf_changed = put_if_changed(c, redis_conf, f"{where.remote_dir}/etc/redis.conf", "600",
                                  "redis" if aws else "root")
    env_changed = put_if_changed(c, config_files.orchestrator_env(inventory, secrets),
                                 f"{where.remote_dir}/etc/orchestrator.env", "600")
    changes += conf_changed + env_changed
    services = manager(inventory.runtime, where.remote_dir)
    for service in orchestrator_services(inventory, host, where):
        inputs = conf_changed if service.name == "redis" else (env_changed or changes > 0)
        outcome = services.ensure(c, service, inputs)
        changes += outcome != "unchanged"
        report(f"{host.name}: {service.name} {outcome}")
    return changes
