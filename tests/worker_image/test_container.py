"""The worker image as it runs: two containers from docker-compose.yml, against the test's own Redis and API.

The compose file is the one the deploy ships, copied as it is, with the env
files the deploy writes beside it; one override puts the containers on the
host's network, because the test's Redis listens on loopback only (the lab of
tests/deploy/test_fabric.py runs the same file on its default network, reaching
the orchestrator's address). podman-compose runs it, podman runs the containers.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests
import yaml

from inferq.contract import WORKERS_KEY
from inferq.deploy import nodes
from inferq.deploy.config_files import compose_dotenv, env_file
from inferq.deploy.defaults import WORKER_UID
from inferq.deploy.inventory import Host
from inferq.stack import processes
from inferq.tasks.faults import SLEEP_PREFIX
from tests import holders
from tests.figures import record
from tests.reliability.stack import FAULT_ENV, VISIBILITY_TIMEOUT, Stack, submit
from tests.worker_image.engine import BIN, ROOT, podman

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # a cold first build downloads every dependency

PROJECT = "inferq-imagetest"
"""Compose project of these containers (the deploy's is "inferq"): names and labels of their own."""

HOST = Host("imagetest", "worker", "127.0.0.1", "127.0.0.1")
"""The host the containers stand for: their node names are worker@imagetest-w1 and -w2."""

NODES = [nodes.node(HOST, 1), nodes.node(HOST, 2)]

JOBS = 24

MAX_SIZE_MB = 700
"""The runtime image's budget (issue 21): onnxruntime, tokenizers, Celery, our code and the export, no torch."""
"""Jobs the main check sends through the API (at least 20, half of them held 0.2 s so both workers take some)."""


class Compose:
    """docker-compose.yml in a project directory of its own, run by podman-compose."""

    def __init__(self, directory: Path, image: str, redis_url: str):
        self.directory = directory
        shutil.copy(ROOT / "docker-compose.yml", directory / "docker-compose.yml")
        # What `fab deploy` writes beside it: the workers' env file (a compose secret: owned by the image's
        # user, mode 600, as the deploy writes it) and compose's .env.
        secrets = directory / "worker.env"
        secrets.write_text(env_file({"REDIS_URL": redis_url, **FAULT_ENV}))
        os.chown(secrets, WORKER_UID, WORKER_UID)
        secrets.chmod(0o600)
        # The cluster's CA, a compose secret too (unused here: this test's Redis speaks plain redis:// on loopback).
        (directory / "redis-ca.crt").write_text("")
        self.redis_url = redis_url
        (directory / ".env").write_text(compose_dotenv(HOST, image))
        services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
        (directory / "host-network.yml").write_text(
            yaml.safe_dump({"services": {name: {"network_mode": "host"} for name in services}}))
        self.services = sorted(services)

    def run(self, *args: str) -> subprocess.CompletedProcess:
        done = subprocess.run([str(BIN / "podman-compose"), "-p", PROJECT, "-f", "docker-compose.yml",
                               "-f", "host-network.yml", *args], cwd=self.directory, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, f"podman-compose {' '.join(args)}: {done.stderr[-1500:]}"
        return done

    def container(self, service: str) -> str:
        """The id of the service's container."""
        found = podman("ps", "-aq", "--filter", f"label=com.docker.compose.project={PROJECT}",
                       "--filter", f"label=com.docker.compose.service={service}").stdout.split()
        assert len(found) == 1, f"{service}: containers {found}"
        return found[0]

    def of_node(self, node: str) -> str:
        """The container whose worker has this Celery node name."""
        return self.container(nodes.service(int(node.rsplit("-w", 1)[1])))

    def down(self) -> None:
        for container in podman("ps", "-aq", "--filter", f"label=com.docker.compose.project={PROJECT}",
                                check=False).stdout.split():
            podman("rm", "-f", "-t", "5", container, check=False)
        podman("pod", "rm", "-f", f"pod_{PROJECT}", check=False)


def wait_ready(stack: Stack, names: list[str], timeout: float = 120) -> None:
    """Wait until each worker has sent its first heartbeat (it consumes from then on)."""
    client = stack.client
    processes.wait_until(lambda: all(client.zscore(WORKERS_KEY, n) is not None for n in names), timeout,
                         f"containers {', '.join(names)}")


@pytest.fixture(scope="module")
def cluster(worker_image, tiny_model, tmp_path_factory):
    """The test's Redis and API under gunicorn, and the two worker containers; how long the containers took."""
    tmp = tmp_path_factory.mktemp("image")
    stack = Stack(tmp / "stack", tiny_model)  # the API never loads a model; the containers have theirs
    stack.start_redis()
    stack.api = stack.start_api()
    (tmp / "project").mkdir()
    compose = Compose(tmp / "project", worker_image.tag, stack.redis.url)
    compose.down()  # what an interrupted run left
    try:
        started = time.monotonic()
        compose.run("up", "-d")
        wait_ready(stack, NODES)
        stack.start_s = time.monotonic() - started
        stack.compose = compose
        yield stack
    finally:
        compose.down()
        stack.stop()


def running_on(stack: Stack, job_id: str, timeout: float = 30) -> str:
    """The node that started the job, once one has."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        holder = holders.holder(stack.client, job_id)
        if holder:
            return holder
        time.sleep(0.02)
    raise AssertionError(f"no container started job {job_id}")


def worker_uids(container: str) -> set[int]:
    """The uids, as the kernel sees them, of every process in the container."""
    pids = podman("top", container, "hpid").stdout.split()[1:]
    uids = set()
    for pid in pids:
        status = Path(f"/proc/{pid}/status").read_text()
        uids.add(int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1]))
    return uids


def test_jobs_through_the_api_run_on_both_containers_as_non_root(cluster, worker_image):
    texts = [f"{SLEEP_PREFIX}0.2" if i % 2 else f"container job {i}: a fine day" for i in range(JOBS)]
    with requests.Session() as http:
        ids = [submit(http, cluster.api, text).json()["job_id"] for text in texts]
    states = cluster.wait_done(ids, timeout=120)
    succeeded = sum(state == "SUCCESS" for state in states.values())
    by = {cluster.meta(j)["result"]["worker"]["hostname"] for j in ids if states[j] == "SUCCESS"}
    containers = [cluster.compose.container(s) for s in cluster.compose.services]
    uids = set().union(*map(worker_uids, containers))
    packages = podman("run", "--rm", "--entrypoint", "pip", worker_image.tag, "list", "--format", "freeze",
                      "--disable-pip-version-check").stdout.split()
    record("worker image", build_s=worker_image.build_s, size_mb=round(worker_image.size_mb),
           start_s=cluster.start_s, containers=len(containers), jobs=len(ids), succeeded=succeeded,
           user=",".join(map(str, sorted(uids))), runtime_packages=",".join(packages))
    assert worker_image.size_mb <= MAX_SIZE_MB, worker_image.size_mb
    names = {p.split("==")[0].lower() for p in packages}
    assert {"celery", "onnxruntime", "tokenizers", "inferq"} <= names
    assert not names & {"torch", "transformers", "onnx", "safetensors", "optimum"}, names
    assert succeeded == len(ids) == JOBS, states
    assert by == set(NODES), by
    assert uids and 0 not in uids, uids
    for container in containers:
        # The export was baked: no worker made its own at start (it would be under /tmp).
        assert podman("exec", container, "test", "-e", "/tmp/inferq-onnx", check=False).returncode == 1


def test_containers_run_read_only_without_capabilities_or_secrets_on_any_command_line(cluster):
    for service in cluster.compose.services:
        container = cluster.compose.container(service)
        host, config = (json.loads(podman("inspect", "--format", f"{{{{json .{part}}}}}", container).stdout)
                        for part in ("HostConfig", "Config"))
        assert host["ReadonlyRootfs"] is True and host["CapAdd"] in (None, [])
        assert "no-new-privileges" in " ".join(host["SecurityOpt"] or []), host["SecurityOpt"]
        assert config["User"] == f"{WORKER_UID}:{WORKER_UID}"
        status = podman("exec", container, "sh", "-c", "grep -E '^(CapEff|NoNewPrivs):' /proc/1/status").stdout
        assert dict(line.split(":") for line in status.split("\n") if line) == {"CapEff": "\t0000000000000000",
                                                                            "NoNewPrivs": "\t1"}, status
        assert podman("exec", container, "touch", "/opt/inferq/x", check=False).returncode != 0
        assert podman("exec", container, "touch", "/tmp/x", check=False).returncode == 0  # the tmpfs
        # The broker URL (with its password) is in no command line podman-compose ran, nor the container's config.
        created = " ".join(config.get("CreateCommand") or [])
        assert created and cluster.compose.redis_url not in created and "REDIS_URL" not in created
        assert not [e for e in config["Env"] or [] if e.startswith("REDIS_URL=")]
    lines = [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in os.listdir("/proc") if pid.isdigit()
             and Path(f"/proc/{pid}/cmdline").exists()]
    assert lines and not [line for line in lines if cluster.compose.redis_url.encode() in line]


def test_healthcheck_passes_in_each_container(cluster):
    for service in cluster.compose.services:
        container = cluster.compose.container(service)
        checked = podman("healthcheck", "run", container, check=False)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert podman("inspect", "--format", "{{.State.Health.Status}}", container).stdout.strip() == "healthy"


def test_sigterm_gives_the_job_back_and_the_container_exits_0(cluster):
    with requests.Session() as http:
        job_id = submit(http, cluster.api, f"{SLEEP_PREFIX}3").json()["job_id"]
    holder = running_on(cluster, job_id)
    container = cluster.compose.of_node(holder)
    # SIGTERM, as compose sends when it replaces a container; SIGKILL only after the
    # container's stop timeout, which would show as exit code 137.
    podman("stop", container)
    exit_code = int(podman("inspect", "--format", "{{.State.ExitCode}}", container).stdout)
    states = cluster.wait_done([job_id], timeout=VISIBILITY_TIMEOUT + 30)
    meta = cluster.meta(job_id)
    logs = podman("logs", container).stdout + podman("logs", container).stderr
    podman("start", container)
    wait_ready(cluster, [holder])
    assert exit_code == 0, exit_code
    assert states[job_id] == "SUCCESS" and meta["result"]["worker"]["hostname"] != holder, meta
    assert "giving them back to the queue" in logs


def test_sigkill_of_a_container_mid_job_finishes_the_job_on_the_other(cluster):
    with requests.Session() as http:
        job_id = submit(http, cluster.api, f"{SLEEP_PREFIX}3").json()["job_id"]
    holder = running_on(cluster, job_id)
    container = cluster.compose.of_node(holder)
    podman("kill", "--signal", "KILL", container)
    cluster.client.zrem(WORKERS_KEY, holder)  # a killed worker leaves its heartbeat behind
    states = cluster.wait_done([job_id], timeout=VISIBILITY_TIMEOUT + 30)
    meta = cluster.meta(job_id)
    state = podman("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", container).stdout.split()
    podman("start", container)
    wait_ready(cluster, [holder])
    assert state == ["exited", "137"], state
    assert states[job_id] == "SUCCESS" and meta["result"]["worker"]["hostname"] != holder, meta
