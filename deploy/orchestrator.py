"""The orchestrator host: Redis (password, AOF, private bind, noeviction), the API and Flower as services."""
from __future__ import annotations

from fabric import Connection

from inferq import commands
from inferq.deploy import config_files
from inferq.deploy.connections import root
from inferq.deploy.credentials import Secrets
from inferq.deploy.files import put_if_changed
from inferq.deploy.inventory import Host, Inventory
from inferq.deploy.layout import Layout, Report
from inferq.deploy.runtime import Runtime
from inferq.deploy.services import Service


def orchestrator_services(runtime: Runtime, inventory: Inventory, host: Host, where: Layout) -> list[Service]:
    """Redis, the API under gunicorn, Flower: the local stack's commands."""
    env = f"{where.remote_dir}/etc/orchestrator.env"
    return [
        Service("redis", [runtime.redis_server, f"{where.remote_dir}/etc/redis.conf"], "", where.remote_dir,
                user=runtime.user("redis")),
        Service("api", commands.api(where.bin), env, where.code, user=runtime.user("api")),
        Service("flower", commands.flower(where.bin, host.private_ip, inventory.flower_port), env, where.code,
                user=runtime.user("flower")),
    ]


def deploy_orchestrator(c: Connection, runtime: Runtime, inventory: Inventory, secrets: Secrets,
                        report: Report) -> int:
    """Configure Redis, the API and Flower; start or restart what changed (a new release too). Return changes."""
    host = inventory.orchestrator
    where = runtime.layout(inventory, host)
    changes = runtime.prepare_orchestrator(c, inventory, host, where)
    data_dir = f"{where.remote_dir}/redis"
    root(c, f"install -d -m 700 -o {runtime.user('redis')} {data_dir}")
    redis_conf = config_files.redis_conf(inventory, host, secrets, data_dir)
    conf_changed = put_if_changed(c, redis_conf, f"{where.remote_dir}/etc/redis.conf", "600", runtime.user("redis"))
    env_changed = put_if_changed(c, config_files.orchestrator_env(inventory, secrets),
                                 f"{where.remote_dir}/etc/orchestrator.env", "600")
    changes += conf_changed + env_changed
    services = runtime.service_manager(where)
    for service in orchestrator_services(runtime, inventory, host, where):
        # Redis restarts only for its own configuration; the API and Flower for a new release too.
        inputs = conf_changed if service.name == "redis" else (env_changed or changes > 0)
        outcome = services.ensure(c, service, inputs)
        changes += outcome != "unchanged"
        report(f"{host.name}: {service.name} {outcome}")
    return changes
