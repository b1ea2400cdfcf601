"""The container hosts of the lab (tests/deploy/cluster.py): the image `fab deploy` built, shipped and runs.

Runs after test_fabric.py, on the same deployed cluster. The updates here roll
out images built for the test (one derived from the release's, one that cannot
start, one that fails on worker-2 only), then go back to the release's, which
also prunes what the hosts no longer need.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from inferq.deploy import nodes
from inferq.deploy.inventory import Host
from tests.deploy.cluster import CONTAINER_HOST, CONTAINER_HOSTS
from tests.deploy.commands import STATUS, SUBMIT, UPDATE
from tests.deploy.conftest import ROOT
from tests.figures import record
from tests.worker_image import engine

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]  # each update ships an image of about 0.8 GB

API = "https://10.231.0.11"
"""The API's public port: TLS (nginx), the certificate pinned."""
CONTAINER_NODES = [nodes.node(Host(CONTAINER_HOST, "worker", "", ""), i) for i in (1, 2)]
NEXT = "localhost/inferq-worker:lab-next"
"""The release's image with one more label: a new image id to roll out."""
BROKEN = "localhost/inferq-worker:lab-broken"
"""An image whose container exits 3 at once, as the worker did when it could not read its model."""
SECOND_FAILS = "localhost/inferq-worker:lab-second-fails"
"""The release's image, except that its workers exit 3 on worker-2: the second host of an update fails."""


@pytest.fixture(scope="module")
def release_image(cluster) -> tuple[str, str]:
    """(tag, id) of the image the first `fab deploy` built, as this machine's store has it."""
    found = re.search(r"(?:built|image) (inferq-worker:[0-9a-f]{12}) \(([0-9a-f]{12})\)", cluster.first.stdout)
    assert found, cluster.first.stdout
    image_id = engine.podman("image", "inspect", "--format", "{{.Id}}", found.group(1)).stdout.strip()
    assert image_id.startswith(found.group(2))
    return found.group(1), image_id


@pytest.fixture(scope="module")
def test_images(release_image, container_base, tmp_path_factory):
    """NEXT and BROKEN, built here (where fab runs, so `--image` finds them); removed after."""
    context = tmp_path_factory.mktemp("images")
    fails_on_worker_2 = json.dumps(["sh", "-c", 'case "$(hostname)" in worker-2-*) exit 3;; esac; '
                                    "exec inferq-worker --hostname=worker@%h"])
    for tag, dockerfile in ((NEXT, f"FROM {release_image[0]}\nLABEL inferq.test=next\n"),
                            (BROKEN, f'FROM {container_base}\nCMD ["sh", "-c", "exit 3"]\n'),
                            (SECOND_FAILS, f"FROM {release_image[0]}\nCMD {fails_on_worker_2}\n")):
        (context / "Dockerfile").write_text(dockerfile)
        engine.podman("build", "-q", "-t", tag, str(context))
    yield {tag: engine.podman("image", "inspect", "--format", "{{.Id}}", tag).stdout.strip()
           for tag in (NEXT, BROKEN, SECOND_FAILS)}
    engine.podman("rmi", "-f", NEXT, BROKEN, SECOND_FAILS, check=False)


def api_key(cluster) -> str:
    return json.loads((cluster.secrets / "lab" / "cluster-secrets.json").read_text())["api_key"]


def jobs(cluster, *args: str) -> subprocess.Popen:
    """Start tests/deploy/jobs.py in the admin namespace (the API's network); its API key in its environment."""
    return subprocess.Popen([*cluster.lab.exec_prefix(cluster.lab.admin), sys.executable, "-m", "tests.deploy.jobs",
                             API, cluster.api_sha256(), *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "INFERQ_API_KEY": api_key(cluster)})


def outcomes(process: subprocess.Popen, timeout: float = 300) -> list[dict]:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-1500:]
    return json.loads(out)


def uids(cluster, container: str) -> set[int]:
    """The uids, as the kernel sees them, of the processes in a container of the container host."""
    found = set()
    for pid in cluster.on_container_host("podman", "top", container, "hpid").stdout.split()[1:]:
        status = Path(f"/proc/{pid}/status").read_text()
        found.add(int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1]))
    return found


def test_the_container_host_runs_the_image_fab_deploy_built_and_it_takes_jobs(cluster, release_image):
    tag, image_id = release_image
    assert f"{CONTAINER_HOST}: loaded {tag}" in cluster.first.stdout
    # Shipped by digest: the host's copy has the id of the one built here, and both containers run it.
    shipped = cluster.on_container_host("podman", "image", "inspect", "--format", "{{.Id}}", tag).stdout.strip()
    containers = cluster.containers()
    assert shipped == image_id and {c["image"] for c in containers.values()} == {image_id}, containers
    assert set().union(*(uids(cluster, c["id"]) for c in containers.values())) == {10001}
    done = outcomes(jobs(cluster, "--count", "40"))
    succeeded = sum(o["status"] == "succeeded" for o in done)
    on_containers = {node: sum(o["worker"] == node for o in done) for node in CONTAINER_NODES}
    record("deploy containers", hosts=1, containers=len(containers), jobs=len(done), succeeded=succeeded)
    assert succeeded == len(done) == 40, done
    assert all(on_containers.values()), on_containers


class CommandLines:
    """Every process command line on this machine (the lab's hosts share its processes), sampled until stopped."""

    def __init__(self):
        self.seen: set[bytes] = set()
        self.samples = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.done.is_set():
            for pid in os.listdir("/proc"):
                try:
                    self.seen.add(Path(f"/proc/{pid}/cmdline").read_bytes())
                except OSError:
                    continue  # not a process, or it ended meanwhile
            self.samples += 1

    def stop(self) -> set[bytes]:
        self.done.set()
        self.thread.join(timeout=60)
        return self.seen


def test_update_to_a_new_image_replaces_one_container_at_a_time_under_load(cluster, test_images, tmp_path):
    stop = tmp_path / "stop"
    load = jobs(cluster, "--until", str(stop), "--hold", "0.2")
    lines = CommandLines()
    try:
        out = cluster.fab(UPDATE, extra=f" --image {NEXT}").stdout
    finally:
        stop.touch()
        seen = lines.stop()
    during = outcomes(load)
    # While compose replaced the containers, no command line on any host held a secret.
    assert lines.samples > 1 and seen
    for value in cluster.secret_values():
        assert not [line for line in seen if value.encode() in line], value[:4]
    assert f"{CONTAINER_HOST}: loaded {NEXT}" in out
    first, second = (out.index(f"{CONTAINER_HOST}: worker-{i} runs {NEXT}") for i in (1, 2))
    assert first < second < out.index(f"{CONTAINER_HOST}: updated"), out
    assert {c["image"] for c in cluster.containers().values()} == {test_images[NEXT]}
    # Workers were replaced while jobs kept coming; none was lost or failed.
    assert during and all(o["status"] == "succeeded" for o in during), during


def test_no_secret_is_in_any_containers_command_line_or_configuration(cluster):
    for host in CONTAINER_HOSTS:
        for container in cluster.containers(host).values():
            config = json.loads(cluster.on_container_host("podman", "inspect", "--format", "{{json .Config}}",
                                                          container["id"], host=host).stdout)
            # CreateCommand: the `podman run` line podman-compose ran for it, as ps showed it then.
            seen = " ".join(config.get("CreateCommand") or []) + " " + " ".join(config.get("Env") or [])
            assert "podman" in seen and "/run/secrets/worker_env" in seen, seen[:300]
            for value in cluster.secret_values():
                assert value not in seen, (host, value[:4])


def test_a_release_failing_its_health_check_is_rolled_back(cluster, test_images):
    second_before = cluster.containers("worker-2")
    started = time.monotonic()
    failed = cluster.fab(UPDATE, check=False, extra=f" --image {BROKEN}")
    took = time.monotonic() - started
    assert failed.returncode == 1
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 1 and re.fullmatch(
        rf"fab: {CONTAINER_HOST}: {BROKEN} failed its health check \(container \w+ \(exit 3, "
        rf"\d+ restart\(s\)\)\); rolled back to {NEXT} \([0-9a-f]{{12}}\); fleet: every worker container runs "
        rf"{NEXT} \([0-9a-f]{{12}}\)", lines[0]), (lines, took)
    containers = cluster.containers()
    assert {c["image"] for c in containers.values()} == {test_images[NEXT]}, containers
    assert {c["state"] for c in containers.values()} == {"running"}
    assert cluster.containers("worker-2") == second_before  # the update stopped at the failing host
    assert json.loads(cluster.fab(SUBMIT).stdout)["status"] == "succeeded"


def test_when_the_second_host_fails_the_first_goes_back_and_the_fleet_ends_on_one_image(cluster, test_images):
    before = cluster.fleet()
    assert before == {host: {test_images[NEXT]} for host in CONTAINER_HOSTS}, before
    failed = cluster.fab(UPDATE, check=False, extra=f" --image {SECOND_FAILS}")
    lines = failed.stderr.strip().splitlines()
    assert failed.returncode == 1 and len(lines) == 1, failed.stderr
    # worker-1 took the new image and passed; worker-2 failed, went back itself, and worker-1 was taken back.
    out = failed.stdout
    assert out.index(f"worker-1: worker-2 runs {SECOND_FAILS}") < out.index("worker-1: updated")
    assert out.index("worker-1: updated") < out.index(f"worker-1: rolled back to {NEXT}")
    assert lines[0].startswith(f"fab: worker-2: {SECOND_FAILS} failed its health check")
    assert lines[0].endswith(f"; fleet: every worker container runs {NEXT} ({test_images[NEXT][:12]})"), lines[0]
    after = cluster.fleet()
    images = set().union(*after.values())
    record("deploy rollback", hosts=len(after), image_before=test_images[NEXT][:12],
           image_after=",".join(sorted(i[:12] for i in images)), mixed=int(len(images) != 1))
    assert after == before, after
    assert all(c["state"] == "running" for host in CONTAINER_HOSTS for c in cluster.containers(host).values())
    assert json.loads(cluster.fab(SUBMIT).stdout)["status"] == "succeeded"


def test_going_back_to_the_release_image_ships_it_only_where_it_was_pruned(cluster, release_image, test_images,
                                                                            container_base, tmp_path):
    tag, image_id = release_image
    # Two older release images here, built a second apart: the newer one stays (keep_images 2), the older goes.
    older = [f"localhost/inferq-worker:{n:012x}" for n in (0xa1, 0xa2)]
    for n, old in enumerate(older):
        (tmp_path / "Dockerfile").write_text(f"FROM {container_base}\nLABEL inferq.test=older-{n}\n")
        engine.podman("build", "-q", "-t", old, str(tmp_path))
        time.sleep(1.1)
    out = cluster.fab(UPDATE, extra=f" --image {tag}").stdout
    listed = engine.podman("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.splitlines()
    here = {line.split()[0] for line in listed}
    engine.podman("rmi", "-f", *older, check=False)
    assert "pruned here: " in out and older[0] in out and older[1] not in out, out
    assert older[1] in here and older[0] not in here and f"localhost/{tag}" in here
    # worker-2 still had it (it ran NEXT since, and went back from the image that failed there before
    # recording it). worker-1 had passed SECOND_FAILS before worker-2 failed it: with keep_images 2, its
    # last two were NEXT and SECOND_FAILS, so the release's image had been pruned there, and ships again.
    assert f"{CONTAINER_HOST}: loaded {tag}" in out and "worker-2: loaded" not in out, out
    for host in CONTAINER_HOSTS:
        assert {c["image"] for c in cluster.containers(host).values()} == {image_id}
        # Each host keeps the last two images it ran (the lab's keep_images); the failed ones went.
        assert {t.split("/")[-1] for t in cluster.images(host)} == {tag, NEXT.split("/")[-1]}, host
    assert f"{CONTAINER_HOST}: pruned " in out and BROKEN not in str(cluster.images())
    status = cluster.fab(STATUS).stdout
    assert f"image: every container runs {image_id[:12]}" in status
