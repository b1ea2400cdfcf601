"""What the Fabric tasks do: plain functions over the inventory (fabfile.py only parses arguments).

Every step is guarded (files written only when they differ, services
restarted only when their inputs changed), so each operation can run twice.
"""
from __future__ import annotations

import json
import shlex
import time
from concurrent.futures import ThreadPoolExecutor

from fabric import Connection

from inferq.deploy import config_files
from inferq.deploy.connections import connect, root
from inferq.deploy.credentials import Secrets
from inferq.deploy.errors import DeployError
from inferq.deploy.inventory import Inventory
from inferq.deploy.layout import Report, layout
from inferq.deploy.orchestrator import deploy_orchestrator, orchestrator_services
from inferq.deploy.services import manager
from inferq.deploy.settings import WAIT_SECONDS
from inferq.deploy.workers import deploy_worker, docker_up, worker_services


def on_orchestrator(c: Connection, inventory: Inventory, check: list[str], timeout: float = 0) -> dict:
    """Run a deploy.remote check on the orchestrator with its env file loaded; its JSON answer."""
    where = layout(inventory, inventory.orchestrator)
    command = (f"cd {shlex.quote(where.code)} && set -a && . {where.remote_dir}/etc/orchestrator.env && set +a && "
               f"{where.bin}/python -m inferq.deploy.remote {shlex.join(check)}")
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
        where = layout(inventory, host)
        with connect(inventory, host) as c:
            if inventory.runtime == "docker":
                lines = root(c, f"cd {where.remote_dir} && docker compose ps --format "
                                "'{{.Service}} {{.State}} {{.Health}}'", warn=True).stdout.split("\n")
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
                text = root(c, f"cd {where.remote_dir} && docker compose logs --no-color --tail {int(lines)}",
                            warn=True)
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
            check = ["ping", "--expect", ",".join(names), "--timeout", str(wait_seconds)]
            pinged = on_orchestrator(c, inventory, check, wait_seconds)
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
