"""Fixtures for the deploy tests: a moto EC2 endpoint in server mode, and SSH hosts in network namespaces."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from inferq.stack import processes
from inferq.stack.redis_server import free_port
from tests.deploy.commands import DEPLOY

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

CANONICAL, DEBIAN = "099720109477", "136693071363"

AMIS = [
    # moto's built-in images stop at Ubuntu 16.04 and have no Debian 12: give it the images the
    # default lookups must choose between (the newest 24.04 amd64 one for workers, the newest
    # Debian 12 amd64 one for the orchestrator).
    {"ami_id": f"ami-0{n:016x}", "name": name, "owner_id": owner, "architecture": arch,
     "creation_date": date, "state": "available", "public": True, "image_type": "machine",
     "root_device_name": root, "root_device_type": "ebs", "virtualization_type": "hvm",
     "hypervisor": "xen", "description": name, "platform": None, "sriov": "simple", "tags": {}}
    for n, (owner, name, arch, date, root) in enumerate([
        (CANONICAL, "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-20260101", "x86_64",
         "2026-01-01T00:00:00.000Z", "/dev/sda1"),
        (CANONICAL, "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-20261101", "x86_64",
         "2026-11-01T00:00:00.000Z", "/dev/sda1"),
        (CANONICAL, "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-arm64-server-20261115", "arm64",
         "2026-11-15T00:00:00.000Z", "/dev/sda1"),
        (DEBIAN, "debian-12-amd64-20260901-2200", "x86_64", "2026-09-01T22:00:00.000Z", "/dev/xvda"),
        (DEBIAN, "debian-12-amd64-20261001-2200", "x86_64", "2026-10-01T22:00:00.000Z", "/dev/xvda"),
        (DEBIAN, "debian-12-arm64-20261001-2200", "arm64", "2026-10-01T22:00:00.000Z", "/dev/xvda"),
    ], start=1)
]
NEWEST_UBUNTU = AMIS[1]["ami_id"]
NEWEST_DEBIAN = AMIS[4]["ami_id"]


@pytest.fixture(scope="module")
def moto_endpoint(tmp_path_factory) -> str:
    """A real moto server process on a free loopback port; its URL."""
    tmp = tmp_path_factory.mktemp("moto")
    amis = tmp / "amis.json"
    amis.write_text(json.dumps(AMIS))
    port = free_port()
    log = tmp / "moto.log"
    process = processes.spawn([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              {"MOTO_AMIS_PATH": str(amis)}, log)
    url = f"http://127.0.0.1:{port}"
    processes.wait_until(lambda: requests.get(url + "/moto-api/", timeout=1).ok, 30, "moto server", process, log)
    yield url
    processes.stop(process)


@pytest.fixture()
def aws_env(moto_endpoint) -> dict[str, str]:
    """Environment that sends boto3 (in a child process) to the moto server, never to AWS."""
    return {
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        # Never ask the instance metadata service (off this machine) for credentials.
        "AWS_EC2_METADATA_DISABLED": "true",
    }


@pytest.fixture()
def ec2(aws_env):
    """A boto3 client of the moto server, for looking at what the commands did."""
    import boto3

    return boto3.client("ec2", region_name="us-east-1", endpoint_url=aws_env["AWS_ENDPOINT_URL"],
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def run_command(command: str, env: dict[str, str], cwd: Path, check: bool = True,
                timeout: float = 240) -> subprocess.CompletedProcess:
    """Run a README command line in a shell, with the venv's scripts first on PATH.

    PYTHONPATH is the checkout: fab imports the lab's runtime, tests.deploy.lab_runtime,
    which lives with the tests and is not installed.
    """
    full_env = {**os.environ, **env, "PATH": f"{BIN}:{os.environ['PATH']}", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(command, shell=True, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{command!r} exited {result.returncode}\n"
                             f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}")
    return result


@pytest.fixture(scope="package")
def cluster(tmp_path_factory, tiny_model, container_base, worker_image):
    """The lab with the cluster deployed once by `fab deploy` (tests/deploy/cluster.py)."""
    from tests.deploy.cluster import STRAY, Cluster, running

    with running(Cluster(tmp_path_factory.mktemp("lab"), tiny_model, container_base)) as made:
        try:
            STRAY.write_text("an untracked file in the checkout before the first deploy\n")
            made.first = made.fab(DEPLOY)
            yield made
        finally:
            STRAY.unlink(missing_ok=True)
