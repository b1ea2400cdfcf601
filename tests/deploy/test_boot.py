"""A worker host joins by itself (deploy/boot.py): the worker image and its secrets from the store (moto's S3 and
SSM, filled by deploy/image_store.py as `fab deploy` would), the digest checked, the image loaded, two containers
started from the stored compose file, and jobs through the API run on them. No fab, no SSH.

Real parts: the worker image built here and loaded by podman, podman-compose, Redis and the API under gunicorn,
moto's server as S3 and SSM. Not the network-namespace lab: the containers run on this machine's network (one
override file, as tests/worker_image does, since the test's Redis listens on loopback), and nothing installs
Docker as a host's user data would."""
from __future__ import annotations

import subprocess

import pytest
import requests
import yaml

from inferq.deploy import autoscaling, boot, image_store, nodes
from inferq.deploy.inventory import Host
from tests.conftest import ROOT
from tests.figures import record
from tests.reliability.stack import FAULT_ENV, Stack, submit
from tests.worker_image.engine import BIN, podman
from tests.worker_image.test_container import wait_ready

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

PROJECT = "inferq-jointest"
HOST = "joiner"
JOBS = 12


def compose_down() -> None:
    for container in podman("ps", "-aq", "--filter", f"label=com.docker.compose.project={PROJECT}",
                            check=False).stdout.split():
        podman("rm", "-f", "-t", "5", container, check=False)
    podman("pod", "rm", "-f", f"pod_{PROJECT}", check=False)


def test_a_host_joins_with_only_the_store_and_takes_jobs(worker_image, tiny_model, moto_endpoint, tmp_path):
    import boto3

    requests.post(moto_endpoint + "/moto-api/reset", timeout=5).raise_for_status()
    s3, ssm = (boto3.client(service, region_name="us-east-1", endpoint_url=moto_endpoint,
                            aws_access_key_id="testing", aws_secret_access_key="testing") for service in ("s3", "ssm"))
    stack = Stack(tmp_path / "stack", tiny_model)
    stack.start_redis()
    stack.api = stack.start_api()
    compose_down()
    try:
        # What `fab deploy` would publish: the saved image by digest, the secrets, the compose file.
        saved = tmp_path / "saved.tar.zst"
        with open(saved, "wb") as out:
            save = subprocess.Popen(["podman", "save", worker_image.tag], stdout=subprocess.PIPE)
            subprocess.run(["zstd", "-q", "-T0", "-c"], stdin=save.stdout, stdout=out, check=True)
            assert save.wait() == 0
        image_id = podman("image", "inspect", "--format", "{{.Id}}", worker_image.tag).stdout.strip()
        bucket = autoscaling.Names("c22").bucket("123456789012", "us-east-1")
        image_store.ensure_bucket(s3, bucket, "us-east-1", "c22")
        s3.delete_bucket_policy(Bucket=bucket)  # TLS only; moto's endpoint is plain HTTP
        image = image_store.put_image(s3, bucket, saved, image_id, worker_image.tag)
        image_store.put_parameters(ssm, "c22", {"REDIS_URL": stack.redis.url, **FAULT_ENV}, image,
                                   (ROOT / "docker-compose.yml").read_text())
        project = tmp_path / "opt-inferq"
        project.mkdir()
        (project / "host-network.yml").write_text(yaml.safe_dump(
            {"services": {name: {"network_mode": "host"} for name in ("worker-1", "worker-2")}}))
        compose = [str(BIN / "podman-compose"), "-p", PROJECT, "-f", "docker-compose.yml", "-f", "host-network.yml"]
        lines: list[str] = []
        times = boot.join(s3, ssm, "c22", bucket, project, HOST, ["podman"], compose, lines.append)
        names = [nodes.node(Host(HOST, "worker", "127.0.0.1", "127.0.0.1"), i) for i in (1, 2)]
        wait_ready(stack, names)
        joined_s = times["join_s"]
        assert (project / "worker.env").stat().st_mode & 0o777 == 0o600
        assert not (project / "image.tar.zst").exists()
        with requests.Session() as http:
            ids = [submit(http, stack.api, f"joined host job {i}").json()["job_id"] for i in range(JOBS)]
        states = stack.wait_done(ids, timeout=120)
        succeeded = sum(state == "SUCCESS" for state in states.values())
        by = {stack.meta(j)["result"]["worker"]["hostname"] for j in ids if states[j] == "SUCCESS"}
        record("autoscale join", join_s=joined_s, fetch_s=times["fetch_s"], load_s=times["load_s"],
               image_mb=round(saved.stat().st_size / 2**20), jobs=len(ids), succeeded=succeeded)
        assert succeeded == JOBS and by <= set(names) and by, (states, by)
    finally:
        compose_down()
        stack.stop()


def test_a_swapped_image_object_is_refused_before_loading(moto_endpoint, tmp_path):
    import boto3

    requests.post(moto_endpoint + "/moto-api/reset", timeout=5).raise_for_status()
    s3, ssm = (boto3.client(service, region_name="us-east-1", endpoint_url=moto_endpoint,
                            aws_access_key_id="testing", aws_secret_access_key="testing") for service in ("s3", "ssm"))
    bucket = "inferq-c22-123456789012-us-east-1"
    image_store.ensure_bucket(s3, bucket, "us-east-1", "c22")
    s3.delete_bucket_policy(Bucket=bucket)
    saved = tmp_path / "saved.tar.zst"
    saved.write_bytes(b"an image" * 1000)
    image = image_store.put_image(s3, bucket, saved, "sha256:0", "inferq-worker:x")
    image_store.put_parameters(ssm, "c22", {"REDIS_URL": "redis://10.0.0.5:6379/0"}, image)
    s3.put_object(Bucket=bucket, Key=image["key"], Body=b"something else")
    calls: list[str] = []
    with pytest.raises(boot.BootError, match="refused, not loaded"):
        boot.join(s3, ssm, "c22", bucket, tmp_path / "project", HOST, ["false"], ["false"], calls.append)
    assert calls == [] and not (tmp_path / "project" / "worker.env").exists()
