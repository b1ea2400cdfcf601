"""What the Fabric tasks do: plain functions over the inventory (fabfile.py only parses arguments).

Every step is guarded (files written only when they differ, services
restarted only when their inputs changed), so each operation can run twice.
"""
from __future__ import annotations

import json
import shlex
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from fabric import Connection

from deploy import config_files, release
from deploy.connections import connect, root
from deploy.credentials import Secrets
from deploy.errors import DeployError
from deploy.files import put_if_changed
from deploy.inventory import Host, Inventory
from deploy.services import Service, manager
from deploy.settings import WAIT_SECONDS

REPO = Path(__file__).resolve().parent.parent
"""The project checkout the deploy ships (AWS) or that the hosts share (process runtime)."""

Report = Callable[[str], None]


@dataclass(frozen=True)
class Layout:
    """Where things are on one host."""

    remote_dir: str
    python: str  # a virtual environment with inferq installed
    code: str  # the project directory services run in

    @property
    def bin(self) -> str:
        return f"{self.python}/bin"


def layout(inventory: Inventory, host: Host) -> Layout:
    """AWS hosts get a venv and the release under remote_dir; process hosts use the shared checkout."""
    if inventory.runtime == "process":
        return Layout(host.remote_dir, inventory.python, inventory.code_dir)
    return Layout(host.remote_dir, f"{host.remote_dir}/venv", f"{host.remote_dir}/current")


def orchestrator_services(inventory: Inventory, host: Host, where: Layout) -> list[Service]:
    """Redis, the API under gunicorn, Flower: the local stack's commands."""
    aws = inventory.runtime == "docker"
    env = f"{where.remote_dir}/etc/orchestrator.env"
    return [
        Service("redis", ["redis-server", f"{where.remote_dir}/etc/redis.conf"], "", where.remote_dir,
                user="redis" if aws else "root"),
        Service("api", [f"{where.bin}/gunicorn", "-c", "python:api.gunicorn_conf", "api:create_app()"], env,
                where.code, user="inferq" if aws else "root"),
        Service("flower", [f"{where.bin}/celery", "-A", "tasks", "flower", f"--port={inventory.flower_port}",
                           f"--address={host.private_ip}"], env, where.code, user="inferq" if aws else "root"),
    ]


def worker_services(inventory: Inventory, host: Host, where: Layout) -> list[Service]:
    """The process runtime's stand-ins for the compose services: the image's command, named like the containers."""
    return [Service(f"worker-{i}", [f"{where.bin}/inferq-worker", f"--hostname=worker@{host.name}-w{i}"],
                    f"{where.remote_dir}/worker.env", where.code)
            for i in range(1, inventory.containers_per_worker + 1)]


def prepare_orchestrator(c: Connection, inventory: Inventory, host: Host, where: Layout) -> int:
    """AWS only: packages, the service user, the release in a venv. Return changes made."""
    changes = 0
    if root(c, "dpkg -s redis-server python3-venv >/dev/null 2>&1", warn=True).failed:
        root(c, "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server python3-venv",
             timeout=900)
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
    conf_changed = put_if_changed(c, redis_conf, f"{where.remote_dir}/etc/redis.conf", "600", "redis" if aws else "root")
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


def deploy_worker(inventory: Inventory, host: Host, secrets: Secrets, report: Report) -> int:
    """Write the worker env and start the host's two workers (compose, or processes). Return changes made."""
    where = layout(inventory, host)
    with connect(inventory, host) as c:
        env_changed = put_if_changed(c, config_files.worker_env(inventory, secrets), f"{where.remote_dir}/worker.env", "600")
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
        root(c, "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io docker-compose-v2",
             timeout=900)
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


def on_orchestrator(c: Connection, inventory: Inventory, check: list[str], timeout: float = 0) -> dict:
    """Run a deploy.remote check on the orchestrator with its env file loaded; its JSON answer."""
    where = layout(inventory, inventory.orchestrator)
    command = (f"cd {shlex.quote(where.code)} && set -a && . {where.remote_dir}/etc/orchestrator.env && set +a && "
               f"{where.bin}/python -m deploy.remote {shlex.join(check)}")
    result = root(c, command, warn=True, timeout=timeout + 120 if timeout else None)
    try:
        answer = json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise DeployError(f"check {check[0]} on the orchestrator failed: {result.stderr.strip()[-300:]}") from None
    answer["ok"] = result.ok
    return answer


def deploy(inventory: Inventory, secrets: Secrets, report: Report, wait_seconds: float = WAIT_SECONDS) -> int:
    """Configure the whole cluster, wait for every worker's ping, run a smoke job. Return changes made."""
    with connect(inventory, inventory.orchestrator) as c:
        changes = deploy_orchestrator(c, inventory, secrets, report)
    workers = inventory.workers
    with ThreadPoolExecutor(max_workers=max(1, len(workers))) as pool:
        changes += sum(pool.map(lambda h: deploy_worker(inventory, h, secrets, report), workers))
    expected = config_files.worker_names(inventory)
    with connect(inventory, inventory.orchestrator) as c:
        pinged = on_orchestrator(c, inventory, ["ping", "--expect", ",".join(expected), "--timeout", str(wait_seconds)],
                                 wait_seconds)
        if pinged["missing"]:
            raise DeployError(f"workers not answering a Celery ping after {wait_seconds:.0f}s: "
                              f"{', '.join(pinged['missing'])}; see `fab -r deploy logs`")
        report(f"{len(expected)} worker(s) answer a Celery ping")
        smoke = on_orchestrator(c, inventory, ["smoke", "--api", f"http://127.0.0.1:{inventory.api_port}"], 60)
    if smoke["status"] != "succeeded":
        raise DeployError(f"smoke job {smoke.get('job_id')} ended {smoke.get('status')}")
    report(f"smoke job {smoke['job_id']} succeeded on {smoke['worker']}")
    report(f"deploy done: {changes} change(s)")
    return changes


def status(inventory: Inventory, report: Report) -> dict:
    """Workers online, queue depth, and each worker host's containers (or processes)."""
    with connect(inventory, inventory.orchestrator) as c:
        answer = on_orchestrator(c, inventory, ["status", "--expect", ",".join(config_files.worker_names(inventory))])
    report(f"workers online: {len(answer['online'])} ({', '.join(answer['online']) or 'none'})")
    if answer["missing"]:
        report(f"workers missing: {', '.join(answer['missing'])}")
    report(f"queue depth: {answer['queue_depth']}")
    answer["hosts"] = {}
    for host in inventory.workers:
        started = time.monotonic()
        where = layout(inventory, host)
        with connect(inventory, host) as c:
            if inventory.runtime == "docker":
                lines = root(c, f"cd {where.remote_dir} && docker compose ps --format "
                                "'{{{{.Service}}}} {{{{.State}}}} {{{{.Health}}}}'", warn=True).stdout.split("\n")
            else:
                services = manager(inventory.runtime, where.remote_dir)
                lines = [f"{s.name} {services.state(c, s)}" for s in worker_services(inventory, host, where)]
        answer["hosts"][host.name] = [line for line in lines if line.strip()]
        report(f"{host.name}: " + "; ".join(answer["hosts"][host.name]))
    return answer


def logs(inventory: Inventory, lines: int, report: Report) -> None:
    """The last lines of every service's log, host by host."""
    for host in inventory.hosts:
        where = layout(inventory, host)
        services = manager(inventory.runtime, where.remote_dir)
        with connect(inventory, host) as c:
            if host.role == "orchestrator":
                for service in orchestrator_services(inventory, host, where):
                    report(f"== {host.name} {service.name}\n{services.logs(c, service, lines)}")
            elif inventory.runtime == "docker":
                text = root(c, f"cd {where.remote_dir} && docker compose logs --no-color --tail {int(lines)}", warn=True)
                report(f"== {host.name}\n{text.stdout}")
            else:
                for service in worker_services(inventory, host, where):
                    report(f"== {host.name} {service.name}\n{services.logs(c, service, lines)}")


def rolling_update(inventory: Inventory, secrets: Secrets, report: Report, wait_seconds: float = WAIT_SECONDS) -> None:
    """Roll the current version out one worker host at a time, each back on the Celery ping before the next."""
    for host in inventory.workers:
        started = time.monotonic()
        where = layout(inventory, host)
        with connect(inventory, host) as c:
            if inventory.runtime == "docker":
                docker_up(c, inventory, host, where)  # a new release means a new image tag: compose recreates
            else:
                services = manager(inventory.runtime, where.remote_dir)
                # SIGTERM: each worker finishes the job it holds; the other hosts keep serving meanwhile.
                services.restart(c, *worker_services(inventory, host, where))
        restarted = time.monotonic()
        names = [n for n in config_files.worker_names(inventory) if n.startswith(f"worker@{host.name}-")]
        with connect(inventory, inventory.orchestrator) as c:
            pinged = on_orchestrator(c, inventory, ["ping", "--expect", ",".join(names), "--timeout", str(wait_seconds)],
                                     wait_seconds)
        if pinged["missing"]:
            raise DeployError(f"{host.name} did not come back ({', '.join(pinged['missing'])}); rollout stopped")
        report(f"{host.name}: updated, {len(names)} worker(s) answer a Celery ping "
               f"({time.monotonic() - started:.1f}s, restart {restarted - started:.1f}s)")


def submit(inventory: Inventory, secrets: Secrets, text: str, wait: float = 30) -> dict:
    """Submit one text to the orchestrator's public API and wait for its result."""
    import requests

    base = f"http://{inventory.orchestrator.public_ip}:{inventory.api_port}"
    headers = {"X-API-Key": secrets.api_key}
    posted = requests.post(f"{base}/jobs", json={"text": text}, headers=headers, timeout=10)
    if posted.status_code != 202:
        raise DeployError(f"the API answered {posted.status_code}: {posted.text[:200]}")
    job_id = posted.json()["job_id"]
    return requests.get(f"{base}/jobs/{job_id}", params={"wait": wait}, headers=headers, timeout=wait + 10).json()
