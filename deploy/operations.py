"""What the Fabric tasks do: plain functions over the inventory (fabfile.py only parses arguments).

Every step is guarded (files written only when they differ, services
restarted only when their inputs changed, containers replaced only when their
image or configuration did), so each operation can run twice. The runtime is
chosen once per operation, from the inventory (deploy.runtime).
"""
from __future__ import annotations

import json
import shlex
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from fabric import Connection
from paramiko import SSHException

from inferq.deploy import deploy_lock, fleet, nodes, orchestrator, release, replication, tls
from inferq.deploy.connections import connect, root
from inferq.deploy.containers import Wait
from inferq.deploy.credentials import Secrets
from inferq.deploy.defaults import PING_ROUND_SECONDS, PROBE_SECONDS, SMOKE_SECONDS, WAIT_SECONDS
from inferq.deploy.errors import DeployError
from inferq.deploy.image import Archive, Image
from inferq.deploy.inventory import Host, Inventory
from inferq.deploy.layout import REPO, Report
from inferq.deploy.orchestrator import deploy_orchestrator, orchestrator_services
from inferq.deploy.runtime import Runtime, load
from inferq.deploy.workers import deploy_worker


def on_orchestrator(c: Connection, runtime: Runtime, inventory: Inventory, check: list[str],
                    timeout: float = 0, host: Host | None = None) -> dict:
    """Run a deploy.remote check on an orchestrator (c's: host, by default the first) with its env file loaded;
    its JSON answer."""
    where = runtime.layout(inventory, host or inventory.orchestrator)
    # The API's env for its key (the smoke job), then Flower's: the checks log in to Redis as Flower's user.
    command = (f"cd {shlex.quote(where.code)} && set -a && . {where.remote_dir}/etc/orchestrator.env && "
               f". {where.remote_dir}/etc/flower.env && set +a && "
               f"{where.bin}/python -m inferq.deploy.remote {shlex.join(check)}")
    result = root(c, command, warn=True, timeout=timeout + 120 if timeout else None)
    try:
        answer = json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise DeployError(f"check {check[0]} on the orchestrator failed: {result.stderr.strip()[-300:]}") from None
    answer["ok"] = result.ok
    return answer


def waiter(runtime: Runtime, inventory: Inventory, wait_seconds: float) -> Wait:
    """wait(nodes, failed): ping the nodes via the orchestrator until they answer, failed() says why, or time out."""
    def wait(names: list[str], failed: Callable[[], str | None]) -> str | None:
        deadline = time.monotonic() + wait_seconds
        with connect(inventory, inventory.orchestrator) as c:
            while True:
                check = ["ping", "--expect", ",".join(names), "--timeout", str(PING_ROUND_SECONDS)]
                pinged = on_orchestrator(c, runtime, inventory, check, PING_ROUND_SECONDS)
                if not pinged["missing"]:
                    return None
                reason = failed()
                if reason:
                    return reason
                if time.monotonic() > deadline:
                    return f"no Celery ping answer from {', '.join(pinged['missing'])} within {wait_seconds:.0f}s"
    return wait


def deploy(inventory: Inventory, secrets: Secrets, secrets_dir: str, report: Report,
           wait_seconds: float = WAIT_SECONDS, allow_dirty: bool = False, break_lock: bool = False) -> int:
    """Configure the whole cluster, wait for every worker's ping, run a smoke job. Return changes made."""
    runtime = load(inventory)
    runtime.release = release.package(REPO, allow_dirty)
    report(runtime.release.describe())
    with deploy_lock.holding(inventory, "deploy", break_lock, report):
        primary = replication.current_primary(inventory, runtime)
        before = {}
        changes = 0
        for host in inventory.orchestrators:
            with connect(inventory, host) as c:
                before[host.name] = orchestrator.snapshot(c, runtime, inventory, host)
                changes += deploy_orchestrator(c, runtime, inventory, host, primary, secrets, secrets_dir, report)
        if inventory.ha:
            changes += replication.deploy_standby(runtime, inventory, primary, secrets, secrets_dir, report)
            # Accepted means on two nodes: the smoke job would be refused until the replicas follow.
            replication.wait_for_sentinels(inventory, runtime, report)
        workers = inventory.workers
        if workers or inventory.autoscaling:  # the worker image: built once, here, shipped to every worker host
            image = runtime.build_image(report)
            wait = waiter(runtime, inventory, wait_seconds)
            with tempfile.TemporaryDirectory(prefix="inferq-image-") as scratch, \
                    ThreadPoolExecutor(max_workers=max(1, len(workers))) as pool:
                archive = Archive(runtime.docker, image, scratch)
                changes += sum(pool.map(lambda h: deploy_worker(runtime, inventory, h, secrets, secrets_dir, image,
                                                                archive, wait, report), workers))
                publish_for_group(runtime, inventory, secrets, secrets_dir, archive, image, report)
            runtime.prune_images(image, report)
        expected = nodes.worker_nodes(inventory)
        # A worker group's hosts join by themselves once the image is published (they poll for it every 30 s):
        # the smoke job waits for at least its minimum of hosts' workers, or it could find no worker and roll a
        # good orchestrator back.
        group_workers = group_workers_wanted(inventory)
        at_least = len(expected) + group_workers
        with connect(inventory, inventory.orchestrator) as c:
            pinged = on_orchestrator(c, runtime, inventory,
                                     ["ping", "--expect", ",".join(expected), "--timeout", str(wait_seconds),
                                      "--at-least", str(at_least)], wait_seconds)
        if pinged["missing"]:
            raise DeployError(f"workers not answering a Celery ping after {wait_seconds:.0f}s: "
                              f"{', '.join(pinged['missing'])}; see `fab -r deploy logs`")
        if pinged.get("short"):
            group = inventory.autoscaling["group"]
            raise DeployError(f"worker group {group}: {len(pinged['online']) - len(expected)} of its {group_workers} "
                              f"minimum worker(s) answer a Celery ping after {wait_seconds:.0f}s; the orchestrator "
                              "is deployed and the image published, the smoke job not run: see a host's "
                              "/var/log/cloud-init-output.log, then `fab -r deploy deploy` again")
        report(f"{len(expected)} worker(s) answer a Celery ping" if not group_workers else
               f"{len(pinged['online'])} worker(s) answer a Celery ping (at least {group_workers} wanted from worker "
               f"group {inventory.autoscaling['group']}, its minimum hosts')")
        smoke_or_roll_back(runtime, inventory, secrets, secrets_dir, before, report)
    for line in public_api(inventory, secrets_dir):
        report(line)
    report(f"deploy done: {changes} change(s)")
    return changes


def smoke(inventory: Inventory, secrets: Secrets, secrets_dir: str, host: Host) -> dict:
    """One job through host's public API (TLS, its certificate pinned, the API key), waited for; the job's JSON."""
    import requests

    session, _ = pinned_session(inventory, secrets_dir, host)
    base = public_url(inventory, host)
    session.headers["X-API-Key"] = secrets.api_key
    deadline = time.monotonic() + SMOKE_SECONDS
    try:
        posted = session.post(f"{base}/jobs", json={"text": "inferq deploy smoke test"}, timeout=10)
        if posted.status_code != 202:
            return {"status": f"refused ({posted.status_code}: {posted.text.strip()[:160]})"}
        job = posted.json()
        while job.get("status") not in ("succeeded", "failed", "cancelled") and time.monotonic() < deadline:
            job = session.get(f"{base}/jobs/{job['job_id']}", params={"wait": 10}, timeout=25).json()
        return job
    except requests.RequestException as exc:
        return {"status": f"unanswered ({type(exc).__name__})"}


def smoke_or_roll_back(runtime: Runtime, inventory: Inventory, secrets: Secrets, secrets_dir: str,
                       before: dict[str, dict[str, str]], report: Report) -> None:
    """A smoke job through the public API of each orchestrator in before (name -> its snapshot); if one fails,
    each of them goes back to what it ran before."""
    hosts = [h for h in inventory.orchestrators if h.name in before]
    failed = []
    for host in hosts:
        job = smoke(inventory, secrets, secrets_dir, host)
        if job.get("status") == "succeeded":
            report(f"smoke job {job['job_id']} succeeded through {public_url(inventory, host)} on "
                   f"{job['worker']['hostname']}")
        else:
            failed.append(f"the smoke job through {public_url(inventory, host)} ended {job.get('status')}")
    if not failed:
        return
    back = []
    for host in hosts:
        with connect(inventory, host) as c:
            now = orchestrator.roll_back(c, runtime, inventory, host, before[host.name], report)
        again = smoke(inventory, secrets, secrets_dir, host).get("status")
        which = f"the orchestrator {host.name}" if inventory.ha else "the orchestrator"
        back.append(f"{which} went back to release {now or 'none'} and its previous env file and proxy "
                    f"configuration (a smoke job there: {again})")
    raise DeployError(f"{'; '.join(failed)}: {'; '.join(back)}; see `fab -r deploy logs`")


def api_url(inventory: Inventory) -> str:
    """The API's public address: TLS on the (first) orchestrator."""
    return public_url(inventory, inventory.orchestrator)


def api_endpoints(inventory: Inventory, secrets_dir: str) -> list[tuple[str, str]]:
    """Every orchestrator's public API, in name order: (URL, SHA-256 fingerprint of the certificate
    that orchestrator shows, deploy.tls.load_for): one, or two with --ha."""
    hosts = inventory.orchestrators
    if not hosts:
        raise DeployError("the inventory has no orchestrator host: run `inferq-provision up`")
    return [(public_url(inventory, host), pinned_certificate(inventory, secrets_dir, host).sha256) for host in hosts]


def pinned_certificate(inventory: Inventory, secrets_dir: str, host: Host) -> tls.Certificate:
    """The API certificate an orchestrator shows: its own with --ha, else the cluster's (deploy.tls.load_for)."""
    made = tls.load_for(secrets_dir, inventory.cluster, host.name)
    if made is None:
        raise DeployError(f"no certificate of cluster {inventory.cluster}'s API on {host.name} in {secrets_dir}: "
                          "run `fab -r deploy deploy` first")
    return made


def public_url(inventory: Inventory, host: Host) -> str:
    """An orchestrator's public API address: TLS on its public address."""
    port = inventory.https_port
    return f"https://{host.public_ip}" + ("" if port == 443 else f":{port}")


def pinned_session(inventory: Inventory, secrets_dir: str, host: Host | None = None):
    """An HTTP session that accepts only the certificate of host's API (by default the first orchestrator's)."""
    import requests

    from inferq.client.pinning import pin

    made = pinned_certificate(inventory, secrets_dir, host or inventory.orchestrator)
    return pin(requests.Session(), made.sha256), made.sha256


def public_api(inventory: Inventory, secrets_dir: str, strict: bool = True) -> list[str]:
    """Check each orchestrator's public port answers over TLS with its pinned certificate; a line per orchestrator
    saying how to reach it. strict: one that does not answer is a DeployError, else a line saying so."""
    import requests

    lines = []
    for host in inventory.orchestrators:
        session, sha256 = pinned_session(inventory, secrets_dir, host)
        url = public_url(inventory, host)
        try:
            session.get(f"{url}/healthz", timeout=(PROBE_SECONDS, 10)).raise_for_status()
        except requests.RequestException as exc:
            if strict:
                raise DeployError(f"the API's public port on {host.name} does not answer over TLS: {exc}") from None
            lines.append(f"API: {url} does not answer ({type(exc).__name__})")
            continue
        lines.append(f"API: {url} (TLS, certificate SHA-256 {sha256}; INFERQ_API_CERT_SHA256 for the client)")
    return lines


def reachable_orchestrator(inventory: Inventory) -> Host:
    """The first orchestrator SSH reaches (with --ha the other one when the first is away). Each is first given
    one short try, so a host that is gone costs seconds, not every retry's timeout; only when none answers that
    try is each given its retries (a host rebooting)."""
    errors = []
    for probe in (True, False):
        for host in inventory.orchestrators:
            try:
                with connect(inventory, host, probe=probe) as c:
                    c.run("true", hide=True)
                return host
            except (DeployError, OSError, SSHException) as exc:
                if not probe:
                    errors.append(f"{host.name}: {exc}")
    raise DeployError(f"no orchestrator answers over SSH ({'; '.join(errors)})")


def status(inventory: Inventory, secrets_dir: str, report: Report) -> dict:
    """The public API(s), with --ha Redis's primary and replicas as the Sentinels see them, workers online, queue
    depth, and each worker host's workers with the image each runs. With --ha it says what it can from the
    orchestrator that answers."""
    runtime = load(inventory)
    for line in public_api(inventory, secrets_dir, strict=not inventory.ha):
        report(line)
    host = reachable_orchestrator(inventory) if inventory.ha else inventory.orchestrator
    with connect(inventory, host) as c:
        answer = on_orchestrator(c, runtime, inventory, ["status", "--expect", ",".join(nodes.worker_nodes(inventory))],
                                 host=host)
        if inventory.ha:
            answer["replication"] = replication.replication_status(inventory, runtime, c, host)
            report(replication.status_line(answer["replication"], inventory))
    report(f"workers online: {len(answer['online'])} ({', '.join(answer['online']) or 'none'})")
    if answer["missing"]:
        report(f"workers missing: {', '.join(answer['missing'])}")
    report(f"queue depth: {answer['queue_depth']}")
    if inventory.autoscaling:
        from inferq.deploy import autoscaling

        answer["group"] = autoscaling.group_status(inventory.autoscaling, inventory.cluster)
        report(autoscaling.status_line(answer["group"]))
    answer["hosts"] = {}
    for host in inventory.workers:
        with connect(inventory, host) as c:
            found = runtime.workers(inventory, host).status(c)
        answer["hosts"][host.name] = found
        report(f"{host.name}: " + "; ".join(
            f"{w['service']} {w['state']}"
            + (f" image {w['image'][:12]} ({w['tags'] or 'untagged'})" if w["image"] else "")
            for w in found))
    images = {w["image"] for found in answer["hosts"].values() for w in found if w["image"]}
    if len(images) == 1:
        report(f"image: every container runs {images.pop()[:12]}")
    elif images:
        report(f"image: containers run {len(images)} different images ({', '.join(sorted(i[:12] for i in images))})")
    return answer


def logs(inventory: Inventory, lines: int, report: Report) -> None:
    """The last lines of every service's log, host by host."""
    runtime = load(inventory)
    for host in inventory.hosts:
        where = runtime.layout(inventory, host)
        with connect(inventory, host) as c:
            services = runtime.service_manager(where)
            if host.role == "orchestrator":
                found = [(s.name, services.logs(c, s, lines))
                         for s in orchestrator_services(runtime, inventory, host, where)]
            else:
                found = runtime.workers(inventory, host).logs(c, lines)
                if host == inventory.standby:  # its Redis replica and Sentinel (--ha)
                    found += [(s.name, services.logs(c, s, lines)) for s in replication.standby_services(
                        runtime, inventory, where)]
        for name, text in found:
            report(f"== {host.name} {name}\n{text}")


def rolling_update(inventory: Inventory, secrets: Secrets, secrets_dir: str, report: Report,
                   wait_seconds: float = WAIT_SECONDS, image_tag: str | None = None, allow_dirty: bool = False,
                   break_lock: bool = False) -> None:
    """Update the orchestrators' services one at a time (smoke job, else back), with --ha the standby's Redis and
    Sentinel, then the workers one host and one worker at a time.

    The release's image is built once (or image_tag, already built here, is
    used). If a host's new workers fail their health check, that host and every
    host updated before it go back to the image each ran, so the fleet never
    stays mixed; the run ends saying which image the whole fleet runs.
    """
    runtime = load(inventory)
    runtime.release = release.package(REPO, allow_dirty)
    report(runtime.release.describe())
    with deploy_lock.holding(inventory, "update", break_lock, report):
        primary = replication.current_primary(inventory, runtime)
        # One orchestrator at a time, each smoked through its own API before the next: with --ha the other one
        # answers meanwhile.
        for host in inventory.orchestrators:
            with connect(inventory, host) as c:
                before = {host.name: orchestrator.snapshot(c, runtime, inventory, host)}
                deploy_orchestrator(c, runtime, inventory, host, primary, secrets, secrets_dir, report)
            smoke_or_roll_back(runtime, inventory, secrets, secrets_dir, before, report)
        if inventory.ha:
            replication.deploy_standby(runtime, inventory, primary, secrets, secrets_dir, report)
            replication.wait_for_sentinels(inventory, runtime, report)
        if inventory.workers or inventory.autoscaling:
            image = runtime.existing_image(image_tag) if image_tag else runtime.build_image(report)
            with tempfile.TemporaryDirectory(prefix="inferq-image-") as scratch:
                if inventory.workers:
                    update_workers(runtime, inventory, secrets, secrets_dir, image, scratch,
                                   waiter(runtime, inventory, wait_seconds), report)
                publish_for_group(runtime, inventory, secrets, secrets_dir, Archive(runtime.docker, image, scratch),
                                  image, report)
            runtime.prune_images(image, report)


def group_workers_wanted(inventory: Inventory) -> int:
    """Workers of the worker group that must answer before the smoke job: its minimum hosts' containers (0 without
    a group)."""
    if not inventory.autoscaling:
        return 0
    from inferq.deploy import autoscaling

    return autoscaling.min_size(inventory.autoscaling) * inventory.containers_per_worker


def publish_for_group(runtime: Runtime, inventory: Inventory, secrets: Secrets, secrets_dir: str, archive: Archive,
                      image: Image, report: Report) -> None:
    """With a worker Auto Scaling group (inventory.autoscaling): the image and the worker settings to its store, and
    when the image is not the one published before, an instance refresh of the group (deploy/autoscaling.py)."""
    if not inventory.autoscaling:
        return
    from inferq.deploy import image_store

    compose = runtime.release.file("docker-compose.yml").decode() if runtime.release else ""
    # The workers reach Redis over TLS and trust only the cluster's CA: a host of the group needs it too.
    ca_pem = tls.load_or_create_ca(secrets_dir, inventory.cluster).cert_pem.decode()
    stored = image_store.publish(inventory, secrets, archive.ready(), image, compose, report, ca_pem)
    if stored["previous_sha256"] and stored["previous_sha256"] != stored["sha256"]:
        # A new image: the hosts already in the group run the old one. An instance refresh replaces them (each
        # drained by the termination hook), so the group does not stay mixed.
        import boto3

        from inferq.deploy import autoscaling

        group = inventory.autoscaling
        autoscaling.refresh(boto3.client("autoscaling", region_name=group["region"]), group["group"], report)


def update_workers(runtime: Runtime, inventory: Inventory, secrets: Secrets, secrets_dir: str, image: Image,
                   scratch: str, wait: Wait, report: Report) -> None:
    """Roll image out host by host; on a failure, every host already updated goes back (fleet.roll_back)."""
    archive = Archive(runtime.docker, image, scratch)
    updated: list[tuple[Host, Image | None]] = []
    for host in inventory.workers:
        started = time.monotonic()
        before = fleet.running_image(runtime, inventory, host)
        try:
            deploy_worker(runtime, inventory, host, secrets, secrets_dir, image, archive, wait, report)
        except DeployError as exc:
            back = fleet.roll_back(runtime, inventory, secrets, secrets_dir, updated, scratch, wait, report)
            raise DeployError(f"{exc}; {back}") from None
        updated.append((host, before))
        report(f"{host.name}: updated, {len(nodes.host_nodes(inventory, host))} worker(s) answer a Celery ping "
               f"({time.monotonic() - started:.1f}s)")
    report(fleet.one_image(runtime, inventory))


def submit(inventory: Inventory, secrets: Secrets, secrets_dir: str, text: str, wait: float = 30) -> dict:
    """Submit one text to the cluster's public API and wait for its result: every orchestrator's address, each
    with its pinned certificate, the next tried when one does not answer (inferq.client.api.Client); the
    submit carries an Idempotency-Key, so a retry on the next address does not queue it twice."""
    from inferq.client.api import ApiRefused, ApiUnreachable, Client

    endpoints = api_endpoints(inventory, secrets_dir)
    client = Client([url for url, _ in endpoints], secrets.api_key, timeout=10,
                    cert_sha256=[sha256 for _, sha256 in endpoints])
    try:
        return client.submit_and_wait(text, wait)
    except ApiRefused as exc:
        raise DeployError(f"the API at {client.current} answered {exc}") from None
    except ApiUnreachable as exc:
        raise DeployError(f"{exc} (over TLS, each address with its pinned certificate)") from None
