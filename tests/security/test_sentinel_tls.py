"""Sentinel and TLS together, as the deploy's --ha layout runs them: a primary, two replicas and three Sentinels,
all TLS only, with the role ACL users; the whole product on top; the primary killed.

Every server is started with the config lines the deploy writes (deploy/config_files.py: redis_conf,
replica_lines, sentinel_conf) and a certificate from the cluster's CA (deploy/tls.py), plus a few lines of the
test's own that only make the failover fast. The API (gunicorn), a worker and Flower run as their role's user
over rediss:// with the environment the --ha layout gives them (INFERQ_REDIS_SENTINELS ...). After the SIGKILL
of the primary, the Sentinels promote the replica that may be promoted (the other has replica-priority 0 and
stays its replica, so WAIT 1 is met again), every process follows, nothing accepted is lost, and nothing
was refused by an ACL.
"""
from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
import requests

from inferq import commands
from inferq.deploy import config_files, credentials
from inferq.deploy.inventory import Host, Inventory
from inferq.stack import processes
from inferq.stack.redis_server import find_binary, free_port
from tests.conftest import start_api, start_workers
from tests.figures import record
from tests.security.test_redis_acl import HOST, tls_material, wait_final

FLOWER_FOLLOWS_SECONDS = 30
"""How long Flower may take to see the worker again after the failover (its broadcast, asked again)."""

pytestmark = pytest.mark.slow

MASTER = "inferq"
LOOPBACK = "127.0.0.1"
NODE_LINES = ["repl-diskless-sync-delay 0"]
"""Test-only: a replica syncs at once."""
DOWN_AFTER, FAILOVER_TIMEOUT = 2.0, 10.0
"""The primary is declared down after 2 s, a failover may take 10 s (the settings' defaults, as the deploy's)."""


@dataclass
class TlsGroup:
    """Three data nodes (ports[0] starts as the primary, ports[2] may never be promoted) and three Sentinels."""

    root: Path
    secrets: credentials.Secrets
    tls_dir: Path
    ports: list[int]
    sentinel_ports: list[int]
    processes: dict[int, subprocess.Popen] = field(default_factory=dict)

    @property
    def ca(self) -> str:
        return str(self.tls_dir / config_files.REDIS_CA)

    def inventory(self, port: int) -> Inventory:
        return Inventory("lab", [self.host], key_file="", redis_port=port)

    @property
    def host(self) -> Host:
        return Host("orchestrator", "orchestrator", LOOPBACK, LOOPBACK)

    def node_conf(self, index: int) -> str:
        port, data = self.ports[index], self.root / f"node-{index}"
        data.mkdir(exist_ok=True)
        lines = [config_files.redis_conf(self.inventory(port), self.host, self.secrets, str(data), 256 * 2**20,
                                         str(self.tls_dir), "everysec"), *NODE_LINES]
        if index:
            lines += config_files.replica_lines(self.secrets, LOOPBACK, self.ports[0])
        if index == 2:
            lines.append("replica-priority 0")  # never promoted: it stays the replica WAIT 1 counts
        return "\n".join(lines) + "\n"

    def sentinel_conf(self, index: int) -> str:
        data = self.root / f"sentinel-{index}"
        data.mkdir(exist_ok=True)
        conf = config_files.sentinel_conf(self.secrets, LOOPBACK, self.ports[0], self.sentinel_ports[index],
                                          str(self.tls_dir), MASTER, 2, DOWN_AFTER, FAILOVER_TIMEOUT)
        return conf + f'dir "{data}"\n'  # Sentinel rewrites its own file

    def spawn(self, name: str, conf: str, port: int, *args: str) -> None:
        path = self.root / f"{name}.conf"
        path.write_text(conf)
        self.processes[port] = subprocess.Popen([find_binary(), str(path), *args], stdin=subprocess.DEVNULL,
                                                stdout=open(self.root / f"{name}.log", "ab"), stderr=subprocess.STDOUT)

    def start(self) -> TlsGroup:
        for index in range(3):
            self.spawn(f"node-{index}", self.node_conf(index), self.ports[index])
        for index in range(3):
            self.spawn(f"sentinel-{index}", self.sentinel_conf(index), self.sentinel_ports[index], "--sentinel")
        processes.wait_until(lambda: self.ready(self.ports[0], replicas=2), 60, "TLS Sentinel group")
        return self

    def admin(self, port: int) -> redis.Redis:
        """The operator (the default user) on one node, over TLS with the CA."""
        return redis.Redis(host=LOOPBACK, port=port, ssl=True, ssl_ca_certs=self.ca, ssl_cert_reqs="required",
                           password=self.secrets.redis_password, socket_timeout=5)

    def sentinel(self, port: int, **kwargs) -> redis.Redis:
        """A Sentinel: TLS, no password."""
        return redis.Redis(host=LOOPBACK, port=port, ssl=True, ssl_cert_reqs="required", socket_timeout=2,
                           **{"ssl_ca_certs": self.ca, **kwargs})

    def primary_port(self) -> int | None:
        """The port of the primary every live Sentinel names, None while they disagree or cannot say."""
        named = set()
        for port in self.sentinel_ports:
            try:
                named.add(int(self.sentinel(port).sentinel_get_master_addr_by_name(MASTER)[1]))
            except (redis.RedisError, OSError, TypeError):
                return None
        return named.pop() if len(named) == 1 else None

    def ready(self, primary: int, replicas: int) -> bool:
        """Every Sentinel names primary and knows its replicas and the other Sentinels, and a replica
        acknowledges a write (WAIT), so the product's WAIT 1 holds and a failover can happen."""
        try:
            for port in self.sentinel_ports:
                state = self.sentinel(port).sentinel_master(MASTER)
                if (int(state["port"]) != primary or int(state["num-slaves"]) < replicas
                        or int(state["num-other-sentinels"]) < 2):
                    return False
            admin = self.admin(primary)
            admin.publish("inferq:replication-probe", "1")
            return int(admin.wait(1, 500)) >= 1
        except (redis.RedisError, OSError, KeyError):
            return False

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            process.wait(10)


@pytest.fixture(scope="module")
def group(tmp_path_factory) -> TlsGroup:
    root = tmp_path_factory.mktemp("sentinel-tls")
    secrets, tls_dir = tls_material(root)
    made = TlsGroup(root, secrets, tls_dir, [free_port() for _ in range(3)], [free_port() for _ in range(3)])
    try:
        yield made.start()
    finally:
        made.stop()


def ha_env(group: TlsGroup, rendered: str) -> dict[str, str]:
    """A deploy env file (REDIS_URL: rediss:// as a role's user to the first node) plus the --ha layout's Sentinel
    settings, the CA where this machine keeps it."""
    env = dict(line.split("=", 1) for line in rendered.splitlines() if line)
    return {**env, "INFERQ_REDIS_CA_FILE": group.ca,
            "INFERQ_REDIS_SENTINELS": ",".join(f"{LOOPBACK}:{port}" for port in group.sentinel_ports),
            "INFERQ_REDIS_MASTER_NAME": MASTER, "INFERQ_REDIS_MIN_REPLICAS": "1"}


@pytest.fixture(scope="module")
def product(group, tiny_model, tmp_path_factory):
    """One worker, the API under gunicorn and Flower, each as its role's user, through the TLS Sentinels."""
    logs = tmp_path_factory.mktemp("sentinel-tls-product")
    common = {"INFERQ_MODEL": str(tiny_model), "INFERQ_HEARTBEAT_SECONDS": "0.5", "INFERQ_MAX_TEXTS": "8"}
    inventory, secrets, tls_dir = group.inventory(group.ports[0]), group.secrets, str(group.tls_dir)
    worker_env = {**ha_env(group, config_files.worker_env(inventory, secrets)), **common}
    api_env = {**ha_env(group, config_files.orchestrator_env(inventory, secrets, tls_dir)), **common}
    flower_env = {**ha_env(group, config_files.flower_env(inventory, secrets, tls_dir)), **common,
                  "PATH": f"{processes.BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    started: list[subprocess.Popen] = []
    try:
        started += start_workers(worker_env, ["w1"], group.admin(group.ports[0]), logs)
        api, base = start_api(api_env, logs)
        started.append(api)
        processes.wait_until(lambda: processes.http_ok(base + "/readyz"), 30, "API ready", api, logs / "api.log")
        port = free_port()
        flower = processes.spawn(commands.flower(str(processes.BIN), LOOPBACK, port), flower_env, logs / "flower.log")
        started.append(flower)
        flower_url = f"http://{LOOPBACK}:{port}"
        processes.wait_until(lambda: processes.http_ok(flower_url + "/healthcheck"), 30, "Flower", flower,
                             logs / "flower.log")
        yield {"api": base, "flower": flower_url, "logs": logs,
               "flower_auth": tuple(flower_env["FLOWER_BASIC_AUTH"].split(":", 1)),
               "headers": {"X-API-Key": api_env["INFERQ_API_KEYS"]}}
    finally:
        for process in started:
            processes.stop(process)


@dataclass
class Submitter:
    """One client submitting without pause in a thread: (sent, status, job_id) of every submit."""

    base: str
    headers: dict
    pause: float = 0.0  # seconds between two accepted submits (0: none)
    outcomes: list[tuple[float, int, str | None]] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with requests.Session() as http:
            n = 0
            while not self.stopping.is_set():
                n += 1
                sent = time.monotonic()
                try:
                    answer = http.post(f"{self.base}/jobs", json={"text": f"sentinel tls {n}"},
                                       headers=self.headers, timeout=10)
                    status, job = answer.status_code, answer.json().get("job_id") if answer.ok else None
                except requests.RequestException:
                    status, job = 0, None
                self.outcomes.append((sent, status, job))
                if status != 202:
                    time.sleep(0.05)  # Redis is away: do not spin
                elif self.pause:
                    time.sleep(self.pause)


def test_a_client_without_the_cluster_ca_cannot_reach_a_sentinel(group):
    port = group.sentinel_ports[0]
    assert group.sentinel(port).ping()
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        group.sentinel(port, ssl_ca_certs=None).ping()  # TLS trusting the system's CAs only
    with pytest.raises(redis.ConnectionError):  # no TLS at all: nothing it can read
        redis.Redis(host=LOOPBACK, port=port, socket_timeout=2).ping()


def test_the_product_through_tls_sentinels_survives_the_primary_killed(group, product, http):
    base, headers = product["api"], product["headers"]
    old = group.primary_port()
    assert old == group.ports[0]
    done = http.post(f"{base}/jobs?wait=20", json={"text": "before"}, headers=headers, timeout=30)
    assert done.status_code == 200 and done.json()["status"] == "succeeded", done.text
    submitter = Submitter(base, headers)
    thread = threading.Thread(target=submitter.run, daemon=True)
    thread.start()
    try:
        time.sleep(1.5)
        denied = group.admin(old).execute_command("ACL", "LOG")
        assert denied == [], denied  # nothing refused on the first primary either
        killed_at = time.monotonic()
        group.processes[old].kill()
        group.processes[old].wait(10)
        processes.wait_until(lambda: group.primary_port() not in (None, old), 30, "a replica promoted")
        failover_s = time.monotonic() - killed_at
        new = group.primary_port()
        assert new == group.ports[1], "the replica-priority 0 node was promoted"
        processes.wait_until(lambda: any(s == 202 and t > killed_at + failover_s for t, s, _ in submitter.outcomes),
                             30, "a submit accepted after the failover")
        time.sleep(1.5)
    finally:
        submitter.stopping.set()
        thread.join(15)
    accepted = [job for _, status, job in submitter.outcomes if status == 202]
    states = {job: wait_final(http, base, job, headers, timeout=60)["status"] for job in accepted}
    lost = sum(state != "succeeded" for state in states.values())
    others = sorted({status for _, status, _ in submitter.outcomes if status not in (202, 503)})
    record("sentinel tls", accepted=len(accepted), lost=lost, failover_s=failover_s,
           answers_503=sum(status == 503 for _, status, _ in submitter.outcomes))
    assert accepted and lost == 0, states
    assert others == [], others  # away Redis: 503, never another error
    # The new primary replicates to the node that may never be promoted: WAIT 1 is met by it.
    assert group.admin(new).info("replication")["connected_slaves"] >= 1
    # Flower follows too: its workers view (remote control over pub/sub) and its broker view (the lanes).
    # A worker answers Flower's broadcast once its remote-control consumer has reconnected to the new primary
    # (Celery retries it on its own schedule): each refresh is one broadcast of Flower's inspect timeout, asked
    # again for a bounded time (CI once saw {} from a single refresh just after the failover).
    flower, auth = product["flower"], product["flower_auth"]
    asked_at, workers = time.monotonic(), None
    while time.monotonic() - asked_at < FLOWER_FOLLOWS_SECONDS:
        workers = http.get(f"{flower}/api/workers", params={"refresh": "1"}, auth=auth, timeout=20)
        if workers.status_code == 200 and f"w1@{HOST}" in workers.json():
            break
        time.sleep(1)
    record("sentinel tls, flower", workers_seen_after_s=time.monotonic() - asked_at)
    assert workers.status_code == 200 and f"w1@{HOST}" in workers.json(), workers.text[:500]
    broker = http.get(f"{flower}/broker", auth=auth, timeout=10)
    assert broker.status_code == 200 and "inferq.bulk" in broker.text
    # Nothing was refused along the way.
    for port in (new, group.ports[2]):
        denied = group.admin(port).execute_command("ACL", "LOG")
        assert denied == [], (port, denied)
    for log in product["logs"].iterdir():
        text = log.read_text(errors="replace")
        assert "NOPERM" not in text and "no permissions" not in text, f"{log.name}:\n{text[-3000:]}"
