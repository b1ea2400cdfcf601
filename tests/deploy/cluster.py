"""The Fabric test cluster: an orchestrator and two worker hosts in network namespaces, and its inventory.

Both worker hosts run their workers as containers of the worker image that
`fab deploy` builds here and ships to them over SSH; each has a container store
of its own (sshd gives its sessions CONTAINERS_STORAGE_CONF), so the image
arrives there as it would on another machine. The orchestrator runs its
release as processes (tests/deploy/lab_runtime.py). The hosts' keys are pinned
from their consoles, as `inferq-provision up` pins them. While the cluster is
up, an untracked file sits in this checkout (and grows between deploys): it
must never reach a release. Needs root: outside CI these tests skip with the
reason; in CI (CI=true or CI=1) they fail instead.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from inferq.deploy import host_keys
from tests.ci import in_ci
from tests.deploy.commands import FAB_PATHS
from tests.deploy.conftest import BIN, ROOT, run_command
from tests.deploy.netns import Lab, LabUnavailable, unavailable_reason
from tests.deploy.wheelhouse import wheelhouse
from tests.worker_image import engine

HOSTS = ["orchestrator", "worker-1", "worker-2"]
CONTAINER_HOSTS = ["worker-1", "worker-2"]
CONTAINER_HOST = "worker-1"
"""The container host most tests look at."""

STRAY = ROOT / "lab-untracked.log"
"""An untracked file in the checkout during the lab's deploys (a log, say): no release may contain it."""

KEEP_IMAGES = 2
"""Images the container host keeps (fewer than the default 3, so a test sees one pruned)."""

FAB_TIMEOUT = 900
"""Seconds a fab command may take here: a deploy builds the image (cached layers) and ships about 0.8 GB."""

REDIS_MEMORY = 32 * 2**20
"""About what the lab's Redis may hold: its fraction of this machine's memory is set to come to this,
so a test can fill it (on AWS the fraction is deploy.defaults.REDIS_MEMORY_FRACTION)."""


def mem_total() -> int:
    """This machine's memory in bytes, as the orchestrator's deploy reads it (the lab's hosts share it)."""
    line = next(x for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemTotal:"))
    return int(line.split()[1]) * 1024


def container_store(store: Path) -> dict[str, str]:
    """A lab host's own container store under store; the variables that make podman on that host use it."""
    store.mkdir(parents=True)
    (store / "storage.conf").write_text(
        f'[storage]\ndriver = "overlay"\ngraphroot = "{store}/storage"\nrunroot = "{store}/run"\n')
    # Podman keeps its networks in one machine-wide directory: each lab host gets its own, or two
    # hosts creating compose's network at once collide (on AWS each host has its own /etc).
    system = Path("/etc/containers/containers.conf")
    (store / "containers.conf").write_text((system.read_text() if system.exists() else "")
                                           + f'\n[network]\nnetwork_config_dir = "{store}/networks"\n')
    return {"CONTAINERS_STORAGE_CONF": str(store / "storage.conf"), "CONTAINERS_CONF": str(store / "containers.conf")}


def refuse(reason: str):
    if in_ci():
        pytest.fail(f"CI must run the SSH deploy tests: {reason}")
    pytest.skip(reason)


@contextmanager
def running(made: Cluster) -> Iterator[Cluster]:
    """The lab of made up, its hosts' keys pinned, until the block ends (then down); a machine that cannot host
    it skips the tests (fails them in CI)."""
    reason = unavailable_reason()
    if reason:
        refuse(reason)
    try:
        try:
            made.lab.up()
        except LabUnavailable as exc:
            refuse(str(exc))
        made.pin()
        yield made
    finally:
        made.down()


class Cluster:
    """The lab, its inventory and secrets, and a way to run commands in its admin namespace."""

    def __init__(self, tmp: Path, tiny_model: Path, base_image: str, hosts: list[str] = HOSTS,
                 container_hosts: list[str] = CONTAINER_HOSTS, tag: str = ""):
        """hosts: the lab's hosts (names starting with "orchestrator" are orchestrators); container_hosts: those
        that run workers; tag: a second lab's, beside the package's (netns.Lab)."""
        self.tmp = tmp
        self.container_hosts = container_hosts
        self.stores = {name: tmp / "hosts" / name / "containers" for name in container_hosts}
        host_env = {}
        for name, store in self.stores.items():
            host_env[name] = container_store(store)
        self.lab = Lab(tmp, hosts, host_env=host_env, tag=tag)
        self.inventory = tmp / "inventory.json"
        self.known_hosts = tmp / "known_hosts"
        self.secrets = tmp / "secrets"
        build_args, build_contexts = engine.build_options(base_image)
        hosts = [{"name": h.name, "role": "orchestrator" if h.name.startswith("orchestrator") else "worker",
                  "public_ip": h.address, "private_ip": h.address, "instance_id": f"netns:{h.namespace}",
                  "remote_dir": str(tmp / "hosts" / h.name)} for h in self.lab.hosts]
        self.inventory_data = {
            "cluster": "lab", "hosts": hosts, "key_file": str(self.lab.key), "ssh_user": "root",
            "known_hosts": str(self.known_hosts), "redis_memory_fraction": REDIS_MEMORY / mem_total(),
            "runtime": "tests.deploy.lab_runtime:LabRuntime",
            "runtime_options": {
                "pip_args": ["--no-index", "--find-links", str(wheelhouse())],
                "docker": engine.DOCKER, "compose": str(BIN / "podman-compose"), "keep_images": KEEP_IMAGES,
                "build_args": build_args, "build_contexts": build_contexts,
            },
            "containers_per_worker": 2,
            "env": {"INFERQ_HEARTBEAT_SECONDS": "0.5", "INFERQ_TEST_FAULTS": "1"},
        }
        self.outputs: list[str] = []
        # A developer's checkout with uncommitted changes deploys them as an operator would (--allow-dirty,
        # the release marked dirty); CI's clean clone deploys its commit.
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        self.ship_flags = " --allow-dirty" if dirty else ""

    def pin(self) -> None:
        """Write the inventory, and pin each host's keys as `inferq-provision up` does: from its console."""
        entries = [(h.address, 22, key) for h in self.lab.hosts
                   for key in host_keys.keys_in_console(self.lab.console(h.name).read_text())]
        assert len(entries) == len(self.lab.hosts), entries
        host_keys.write_known_hosts(self.known_hosts, entries)
        self.inventory.write_text(json.dumps(self.inventory_data))

    def fab(self, template: str, check: bool = True, extra: str = "") -> subprocess.CompletedProcess:
        command = (template + FAB_PATHS).format(inventory=self.inventory, secrets=self.secrets) + extra
        if template.split()[:4] in (["fab", "-r", "deploy", "deploy"], ["fab", "-r", "deploy", "update"]):
            command += self.ship_flags
        result = run_command(" ".join(self.lab.exec_prefix(self.lab.admin)) + " " + command, {}, ROOT, check=check,
                             timeout=FAB_TIMEOUT)
        self.outputs.append(result.stdout + result.stderr)
        return result

    def in_admin(self, *command: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run a command in the admin namespace (the operator's machine), with env added to this environment."""
        return subprocess.run([*self.lab.exec_prefix(self.lab.admin), *command], capture_output=True, text=True,
                              timeout=300, env={**os.environ, **(env or {})})

    def on_container_host(self, *command: str, check: bool = True, host: str = CONTAINER_HOST
                          ) -> subprocess.CompletedProcess:
        """Run a command as a session on a container host would (its namespace, its container store)."""
        done = subprocess.run([*self.lab.on_host(host), *command], capture_output=True, text=True, timeout=300)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(command)} on {host}: {done.stderr[-800:]}")
        return done

    def containers(self, host: str = CONTAINER_HOST) -> dict[str, dict]:
        """A container host's compose containers by service: id, state and image id."""
        found = {}
        for line in self.on_container_host("podman", "ps", "-a", "--filter", "label=com.docker.compose.project=inferq",
                                           "--format", "{{.ID}}", host=host).stdout.split():
            service, state, image = self.on_container_host(
                "podman", "inspect", "--format",
                '{{index .Config.Labels "com.docker.compose.service"}} {{.State.Status}} {{.Image}}',
                line, host=host).stdout.split()
            found[service] = {"id": line, "state": state, "image": image}
        return found

    def fleet(self) -> dict[str, set[str]]:
        """Each container host's set of image ids its containers run."""
        return {host: {c["image"] for c in self.containers(host).values()} for host in self.container_hosts}

    def images(self, host: str = CONTAINER_HOST) -> set[str]:
        """Tags of the worker images in a container host's store."""
        return {tag for tag in self.on_container_host("podman", "images", "--format", "{{.Repository}}:{{.Tag}}",
                                                      host=host).stdout.split() if "inferq-worker" in tag}

    def pids(self, host: str) -> dict[str, str]:
        run = self.tmp / "hosts" / host / "run"
        return {p.stem: p.read_text().strip() for p in sorted(run.glob("*.pid"))}

    def api_sha256(self, host: str | None = None) -> str:
        """The fingerprint of the certificate `fab deploy` made for the API (what clients pin): the cluster's, or
        one orchestrator's own (--ha)."""
        from inferq.deploy import tls

        made = tls.load_for(self.secrets, "lab", host) if host else tls.load(self.secrets, "lab")
        assert made is not None, f"no API certificate for {host or 'the cluster'}"
        return made.sha256

    def secret_values(self) -> list[str]:
        data = json.loads((self.secrets / "lab" / "cluster-secrets.json").read_text())
        return [v for k, v in data.items() if k != "flower_user"]

    def down(self) -> None:
        """Remove the container host's containers and store, then the lab."""
        if self.lab.namespaces:
            for host in self.container_hosts:
                # In its namespace: the containers' network teardown happens where their network is.
                self.on_container_host("podman", "rm", "-af", "-t", "5", check=False, host=host)
                self.on_container_host("podman", "pod", "rm", "-af", check=False, host=host)
                self.on_container_host("podman", "rmi", "-af", check=False, host=host)
        self.lab.down()
        for store in self.stores.values():
            shutil.rmtree(store, ignore_errors=True)
