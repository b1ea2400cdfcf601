"""Redis as a deployed cluster runs it: TLS only, one ACL user per role (inferq.redis_acl).

A real redis-server is started with the very redis.conf the deploy writes (deploy/config_files.py), with a
certificate from the cluster's CA (deploy/tls.py). The tests prove what each role's user cannot do, directly
or from a script, that a client without the CA or without TLS is refused, and that the whole product (the
API, a worker and Flower, each as its own user over rediss://, with the env files the deploy writes) still
does everything it does, with Redis's ACL LOG empty and no NOPERM in any log.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import requests

from inferq import commands, redis_acl
from inferq.broker import wire
from inferq.deploy import backlog, config_files, credentials, tls
from inferq.deploy.inventory import Host, Inventory
from inferq.stack import processes
from inferq.stack.redis_server import find_binary, free_port
from tests.control.conftest import Receiver

HOST = socket.gethostname()
REFUSED = ("no permissions", "can't run this command", "can't access at least one of the keys", "NOPERM",
           "DEBUG command not allowed")  # DEBUG: refused before the ACL (enable-debug-command no)


@dataclass
class SecureRedis:
    """The deploy's Redis on loopback: its config, its CA, each role's URL and env."""

    inventory: Inventory
    secrets: credentials.Secrets
    tls_dir: Path
    conf: str
    process: subprocess.Popen
    log: Path

    @property
    def ca(self) -> str:
        return str(self.tls_dir / config_files.REDIS_CA)

    @property
    def port(self) -> int:
        return self.inventory.redis_port

    def url(self, role: str) -> str:
        return config_files.redis_url(self.inventory, self.secrets, role)

    def client(self, role: str | None = None, **kwargs) -> redis.Redis:
        """A TLS client checking the CA: as a role's user, or the admin (the default user)."""
        login = ({"username": redis_acl.user_name(role), "password": self.secrets.redis_passwords()[role]}
                 if role else {"password": self.secrets.redis_password})
        return redis.Redis(host="127.0.0.1", port=self.port, ssl=True, ssl_ca_certs=self.ca,
                           ssl_cert_reqs="required", socket_timeout=5, **login, **kwargs)

    def env(self, rendered: str) -> dict[str, str]:
        """A deploy env file as a process environment, the CA where this machine keeps it."""
        env = dict(line.split("=", 1) for line in rendered.splitlines() if line)
        env["INFERQ_REDIS_CA_FILE"] = self.ca
        return env


def tls_material(tmp: Path) -> tuple[credentials.Secrets, Path]:
    """The cluster's secrets and a TLS dir under tmp as a deploy writes it on a host: the cluster's CA, a
    certificate from it for 127.0.0.1, its key (mode 600)."""
    secrets = credentials.load_or_create(tmp / "secrets", "lab")
    ca = tls.load_or_create_ca(tmp / "secrets", "lab")
    cert = tls.load_or_issue(tmp / "secrets", "lab", "redis", ["127.0.0.1"])
    tls_dir = tmp / "tls"
    tls_dir.mkdir()
    (tls_dir / config_files.REDIS_CA).write_bytes(ca.cert_pem)
    (tls_dir / config_files.REDIS_CERT).write_bytes(cert.cert_pem)
    (tls_dir / config_files.REDIS_KEY).write_bytes(cert.key_pem)
    os.chmod(tls_dir / config_files.REDIS_KEY, 0o600)
    return secrets, tls_dir


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory) -> SecureRedis:
    tmp = tmp_path_factory.mktemp("tls_redis-redis")
    made, tls_dir = tls_material(tmp)
    host = Host("orchestrator", "orchestrator", "127.0.0.1", "127.0.0.1")
    inventory = Inventory("lab", [host], key_file="", redis_port=free_port())
    data = tmp / "data"
    data.mkdir()
    conf = config_files.redis_conf(inventory, host, made, str(data), 256 * 2**20, str(tls_dir), "everysec")
    path = tmp / "redis.conf"
    path.write_text(conf)
    log = tmp / "redis.log"
    process = subprocess.Popen([find_binary(), str(path)], stdout=open(log, "ab"), stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL)
    server = SecureRedis(inventory, made, tls_dir, conf, process, log)
    processes.wait_until(lambda: server.client().ping(), 10, "redis-server (TLS)", process, log)
    yield server
    process.terminate()
    process.wait(10)


def refused(client: redis.Redis, *command) -> bool:
    """True when Redis refuses the command for want of permission (an ACL refusal, never another error)."""
    try:
        client.execute_command(*command)
    except redis.ResponseError as exc:
        if any(r in str(exc) for r in REFUSED):
            return True
        raise
    return False


def test_the_generated_config_speaks_tls_only_and_keeps_no_role_password(tls_redis):
    lines = tls_redis.conf.splitlines()
    # Redis 7.0 binds both ports to the same addresses: no plain port at all, TLS on loopback and the private one.
    assert "port 0" in lines and f"tls-port {tls_redis.port}" in lines and "tls-replication yes" in lines
    assert any(line.startswith("bind ") for line in lines)
    for role, password in tls_redis.secrets.redis_passwords().items():
        assert password not in tls_redis.conf  # hashed: #<sha256>
        assert f"user {redis_acl.user_name(role)} on #{redis_acl.password_hash(password)} " in tls_redis.conf
    with pytest.raises(redis.ConnectionError):  # and indeed nothing answers without TLS
        redis.Redis(host="127.0.0.1", port=tls_redis.port, password=tls_redis.secrets.redis_password,
                    socket_timeout=2).ping()


def test_a_client_without_the_ca_or_without_tls_is_refused(tls_redis):
    worker = tls_redis.secrets.redis_passwords()["worker"]
    # TLS, but trusting only the system's CAs: the cluster's certificate does not verify.
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        redis.Redis(host="127.0.0.1", port=tls_redis.port, ssl=True, ssl_cert_reqs="required",
                    username="inferq-worker", password=worker, socket_timeout=2).ping()
    # A plain redis:// client on the TLS port gets no answer it can read.
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(tls_redis.url("worker").replace("rediss://", "redis://"), socket_timeout=2).ping()
    # A wrong password over TLS: refused.
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=tls_redis.port, ssl=True, ssl_ca_certs=tls_redis.ca,
                    username="inferq-worker", password="wrong", socket_timeout=2).ping()


ADMIN_ONLY = [
    ("SWAPDB", "0", "1"), ("FLUSHALL",), ("FLUSHDB",), ("CONFIG", "GET", "dir"), ("CONFIG", "SET", "dir", "/tmp"),
    ("KEYS", "*"), ("SCAN", "0"), ("SELECT", "1"), ("DEBUG", "SLEEP", "0"), ("ACL", "LIST"), ("ACL", "WHOAMI"),
    ("SCRIPT", "FLUSH"), ("SCRIPT", "KILL"), ("FUNCTION", "FLUSH"), ("CLIENT", "KILL", "ID", "1"),
    ("CLIENT", "LIST"), ("REPLICAOF", "NO", "ONE"), ("SAVE",), ("BGREWRITEAOF",), ("MIGRATE", "h", "1", "k", "0", "1"),
    ("RENAME", "inferq", "x"), ("RESTORE", "inferq:job:x", "0", "x"), ("DUMP", "inferq:job:x"),
    ("OBJECT", "ENCODING", "inferq"), ("MEMORY", "USAGE", "inferq"), ("EVAL_RO", "return 1", "0"),
    ("FCALL", "f", "0"),
]


@pytest.mark.parametrize("role", [redis_acl.WORKER, redis_acl.API, redis_acl.FLOWER, redis_acl.REPLICATION,
                                  redis_acl.SENTINEL])
def test_no_role_can_administer_wipe_or_list_redis(tls_redis, role):
    admin = tls_redis.client()
    admin.set("inferq:job:canary", "{}")
    client = tls_redis.client(role)
    for command in ADMIN_ONLY:
        if role == redis_acl.SENTINEL and " ".join(command[:2]) in ("REPLICAOF NO", "SCRIPT KILL", "CLIENT KILL"):
            continue  # Sentinel's job: promote a replica, stop a script or a client that hangs a primary
        assert refused(client, *command), (role, command)
    assert admin.get("inferq:job:canary") == b"{}" and admin.dbsize() >= 1


def test_the_worker_cannot_touch_keys_outside_its_patterns_directly_or_from_a_script(tls_redis):
    admin, worker = tls_redis.client(), tls_redis.client(redis_acl.WORKER)
    admin.set("outside", "kept")
    admin.set("inferq:idempotency:abc", "kept")  # the API's alone
    admin.set("inferq:job:j1", '{"texts": ["x"]}')  # the worker may read a record, never write one
    # Its own keys work, directly and from a script.
    assert worker.lpush("inferq", "m") == 1 and worker.lpop("inferq") == b"m"
    assert worker.eval("return redis.call('INCR', KEYS[1])", 1, "inferq:metrics:probe") == 1
    assert worker.get("inferq:job:j1") == b'{"texts": ["x"]}'
    # Directly: keys outside its patterns, and writes to keys it may only read.
    assert refused(worker, "GET", "outside") and refused(worker, "SET", "outside", "x")
    assert refused(worker, "DEL", "outside") and refused(worker, "GET", "inferq:idempotency:abc")
    assert refused(worker, "SET", "inferq:job:j1", "x") and refused(worker, "DEL", "inferq:job:j1")
    # From a script: declaring a key outside its patterns ...
    assert refused(worker, "EVAL", "return redis.call('GET', KEYS[1])", "1", "outside")
    # ... touching one without declaring it ...
    assert refused(worker, "EVAL", "return redis.call('DEL', 'outside')", "0")
    assert refused(worker, "EVAL", "return redis.call('SET', 'inferq:job:j1', 'x')", "0")
    # ... or calling a command it may not run: the "delete every key" script of the review, in three forms.
    assert refused(worker, "EVAL", "return redis.call('FLUSHALL')", "0")
    assert refused(worker, "EVAL", "return redis.call('SWAPDB', 0, 1)", "0")
    assert refused(worker, "EVAL", "for _, k in ipairs(redis.call('KEYS', '*')) do redis.call('DEL', k) end", "0")
    assert refused(worker, "EVAL", "return redis.call('RENAME', KEYS[1], KEYS[2])", "2", "inferq:metrics:probe",
                   "inferq:metrics:other")  # keys of its own, a command it may not run
    assert admin.get("outside") == b"kept" and admin.get("inferq:job:j1") == b'{"texts": ["x"]}'
    assert admin.get("inferq:idempotency:abc") == b"kept"


def test_the_api_and_flower_stay_in_their_lanes(tls_redis):
    admin, api, flower = tls_redis.client(), tls_redis.client(redis_acl.API), tls_redis.client(redis_acl.FLOWER)
    admin.set("outside", "kept")
    # The API writes jobs and reads what workers report, but may not write the workers' own records.
    assert api.set("inferq:job:probe", "{}") and api.delete("inferq:job:probe") == 1
    assert refused(api, "ZADD", "inferq:workers", "1", "fake-worker")
    assert refused(api, "HSET", "inferq:holding:w", "a", "b")
    assert refused(api, "GET", "outside") and refused(api, "EVAL", "return redis.call('DEL', 'outside')", "0")
    assert refused(api, "SUBSCRIBE", "/0.celery.pidbox")  # no remote control of the workers
    # The scaling signal runs with the API's env on the orchestrator (deploy/backlog.py): it reads as this user.
    admin.lpush("inferq", wire.classify_envelope("b" * 32, ["one", "two"], time.time() - 5, "inferq"))
    reading = backlog.read(api, "inferq", time.time(), fresh_after=0.0)
    assert reading.queued_texts == 2 and reading.oldest_age_s >= 5
    admin.delete("inferq")
    # Flower reads the lanes and talks to the workers; it writes no job, no lane, no result.
    assert flower.llen("inferq") == 0
    assert refused(flower, "LPUSH", "inferq", "m") and refused(flower, "SET", "celery-task-meta-x", "x")
    assert refused(flower, "GET", "inferq:job:probe")
    assert refused(flower, "EVAL", "return redis.call('LPUSH', KEYS[1], 'm')", "1", "inferq")
    assert refused(flower, "DEL", "inferq") and refused(flower, "GET", "outside")
    # Replication and Sentinel read no key at all.
    for role in (redis_acl.REPLICATION, redis_acl.SENTINEL):
        assert refused(tls_redis.client(role), "GET", "inferq:job:probe")
    assert admin.get("outside") == b"kept"


@pytest.fixture(scope="module")
def product(tls_redis, tiny_model, tmp_path_factory):
    """A worker, the API and Flower against the TLS Redis, each as its role's user, with the deploy's env files."""
    logs = tmp_path_factory.mktemp("tls_redis-product")
    common = {"INFERQ_MODEL": str(tiny_model), "INFERQ_HEARTBEAT_SECONDS": "0.5", "INFERQ_TEST_FAULTS": "1",
              "INFERQ_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8", "INFERQ_MAX_TEXTS": "8"}
    inventory, made, tls_dir = tls_redis.inventory, tls_redis.secrets, str(tls_redis.tls_dir)
    worker_env = {**tls_redis.env(config_files.worker_env(inventory, made)), **common}
    api_env = {**tls_redis.env(config_files.orchestrator_env(inventory, made, tls_dir)), **common}
    flower_env = {**tls_redis.env(config_files.flower_env(inventory, made, tls_dir)), **common}
    started: list[subprocess.Popen] = []
    try:
        admin = tls_redis.client()
        worker = processes.spawn(processes.worker_command("w1"), worker_env, logs / "w1.log")
        started.append(worker)
        processes.wait_until(lambda: admin.zscore("inferq:workers", f"w1@{HOST}") is not None, 90, "worker w1",
                             worker, logs / "w1.log")
        bind = f"127.0.0.1:{free_port()}"
        api = processes.spawn(processes.api_command(bind), api_env, logs / "api.log")
        started.append(api)
        base = f"http://{bind}"
        processes.wait_until(lambda: processes.http_ok(base + "/readyz"), 30, "API", api, logs / "api.log")
        # A second API that refuses a second waiting job in a lane (429): it takes the message off again.
        capped_bind = f"127.0.0.1:{free_port()}"
        capped = processes.spawn(processes.api_command(capped_bind), {**api_env, "INFERQ_MAX_QUEUE_DEPTH": "1"},
                                 logs / "api-capped.log")
        started.append(capped)
        processes.wait_until(lambda: processes.http_ok(f"http://{capped_bind}/healthz"), 30, "API (capped)", capped,
                             logs / "api-capped.log")
        port = free_port()
        flower = processes.spawn(commands.flower(str(processes.BIN), "127.0.0.1", port),
                                 {**flower_env, "PATH": f"{processes.BIN}{os.pathsep}{os.environ.get('PATH', '')}"},
                                 logs / "flower.log")
        started.append(flower)
        flower_url = f"http://127.0.0.1:{port}"
        processes.wait_until(lambda: processes.http_ok(flower_url + "/healthcheck"), 30, "Flower", flower,
                             logs / "flower.log")
        def restart_worker() -> None:
            """SIGKILL w1 and start it again under its name (it gives back what its predecessor held)."""
            started[0].kill()
            started[0].wait(10)
            started[0] = processes.spawn(processes.worker_command("w1"), worker_env, logs / "w1-again.log")
            admin.zrem("inferq:workers", f"w1@{HOST}")
            processes.wait_until(lambda: admin.zscore("inferq:workers", f"w1@{HOST}") is not None, 90, "worker w1",
                                 started[0], logs / "w1-again.log")

        yield {"api": base, "capped_api": f"http://{capped_bind}", "flower": flower_url, "logs": logs,
               "api_env": api_env, "flower_env": flower_env,
               "restart_worker": restart_worker,
               "flower_auth": tuple(flower_env["FLOWER_BASIC_AUTH"].split(":", 1)),
               "headers": {"X-API-Key": api_env["INFERQ_API_KEYS"]}}
    finally:
        for process in started:
            processes.stop(process)


def wait_final(http: requests.Session, base: str, job_id: str, headers: dict, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = http.get(f"{base}/jobs/{job_id}", params={"wait": 5}, headers=headers, timeout=10).json()
        if job["status"] in ("succeeded", "failed", "cancelled") or time.monotonic() > deadline:
            return job


def test_everything_the_product_does_works_under_the_role_users_over_tls(tls_redis, product, http):
    from inferq.tasks.faults import SLEEP_PREFIX

    base, headers = product["api"], product["headers"]
    admin = tls_redis.client()
    admin.execute_command("ACL", "LOG", "RESET")
    # Interactive, with ?wait.
    done = http.post(f"{base}/jobs?wait=20", json={"text": "a lovely day"}, headers=headers, timeout=30)
    assert done.status_code == 200 and done.json()["status"] == "succeeded", done.text
    # Bulk: several texts in one job, run in passes.
    bulk = http.post(f"{base}/jobs", json={"texts": ["one", "two", "three", "four"]}, headers=headers, timeout=10)
    assert bulk.status_code == 202
    assert wait_final(http, base, bulk.json()["job_id"], headers)["status"] == "succeeded"
    # Cancel: one running (its result discarded), one queued behind it (it never runs).
    running = http.post(f"{base}/jobs", json={"text": f"{SLEEP_PREFIX}2"}, headers=headers, timeout=10).json()
    deadline = time.monotonic() + 10
    while http.get(f"{base}/jobs/{running['job_id']}", headers=headers, timeout=5).json()["status"] != "running":
        assert time.monotonic() < deadline, "the sleeping job never ran"
        time.sleep(0.05)
    queued = http.post(f"{base}/jobs", json={"text": "cancel me"}, headers=headers, timeout=10).json()
    # A lane past its cap: the job is refused, its message taken off the lane again, its count undone.
    capped = http.post(f"{product['capped_api']}/jobs", json={"text": "one too many"}, headers=headers, timeout=10)
    assert capped.status_code == 429 and capped.json()["error"] == "queue_full", admin.execute_command("ACL", "LOG")
    assert http.delete(f"{base}/jobs/{queued['job_id']}", headers=headers, timeout=5).json()["status"] == "cancelled"
    assert http.delete(f"{base}/jobs/{running['job_id']}", headers=headers,
                       timeout=5).json()["status"] == "cancel_requested"
    assert wait_final(http, base, running["job_id"], headers)["status"] == "cancelled"
    # A callback, delivered by the worker.
    receiver = Receiver([200])
    try:
        posted = http.post(f"{base}/jobs", json={"text": "call me back", "callback_url": receiver.url},
                           headers=headers, timeout=10)
        assert posted.status_code == 202, posted.text
        assert len(receiver.wait_for(1, 30)) == 1
        assert receiver.json(0)["job_id"] == posted.json()["job_id"]
    finally:
        receiver.close()
    # Idempotent submit, /metrics, /readyz.
    again = [http.post(f"{base}/jobs", json={"text": "once"}, headers={**headers, "Idempotency-Key": "k1"},
                       timeout=10).json()["job_id"] for _ in range(2)]
    assert again[0] == again[1]
    metrics = http.get(f"{base}/metrics", headers=headers, timeout=10)
    assert metrics.status_code == 200 and "inferq_jobs_submitted_total" in metrics.text, metrics.text[:500]
    assert http.get(f"{base}/readyz", timeout=5).status_code == 200
    # Flower: the workers (remote control over pub/sub), their tasks (events), the broker's view of the lanes.
    flower, auth = product["flower"], product["flower_auth"]
    workers = http.get(f"{flower}/api/workers", params={"refresh": "1"}, auth=auth, timeout=20)
    assert workers.status_code == 200 and f"w1@{HOST}" in workers.json(), admin.execute_command("ACL", "LOG")
    # (Flower sees the events sent once its receiver is up: the last jobs, not necessarily the first.)
    tasks = http.get(f"{flower}/api/tasks", auth=auth, timeout=10)
    assert tasks.status_code == 200 and again[0] in tasks.json(), admin.execute_command("ACL", "LOG")
    lengths = http.get(f"{flower}/api/queues/length", auth=auth, timeout=10)
    assert lengths.status_code == 200 and {q["name"] for q in lengths.json()["active_queues"]} >= {"inferq"}
    broker = http.get(f"{flower}/broker", auth=auth, timeout=10)
    assert broker.status_code == 200 and "inferq.bulk" in broker.text
    # The deploy's own checks on the orchestrator run as Flower's user (deploy/remote.py).
    status = subprocess.run([str(processes.BIN / "python"), "-m", "inferq.deploy.remote", "status",
                             "--expect", f"w1@{HOST}", "--timeout", "20"],
                            env={**os.environ, **product["flower_env"]}, capture_output=True, text=True, timeout=60)
    assert status.returncode == 0 and json.loads(status.stdout)["missing"] == [], status.stdout + status.stderr[-2000:]
    # A worker killed while it runs a job: restarted under its name, it gives the job back and runs it again
    # (its holding set, kombu's record, the delivery count: all the worker's own keys).
    killed = http.post(f"{base}/jobs", json={"text": f"{SLEEP_PREFIX}1"}, headers=headers, timeout=10).json()
    deadline = time.monotonic() + 10
    while http.get(f"{base}/jobs/{killed['job_id']}", headers=headers, timeout=5).json()["status"] != "running":
        assert time.monotonic() < deadline, "the sleeping job never ran"
        time.sleep(0.05)
    product["restart_worker"]()
    assert wait_final(http, base, killed["job_id"], headers, timeout=60)["status"] == "succeeded"
    # Nothing was refused along the way.
    denied = admin.execute_command("ACL", "LOG")
    assert denied == [], denied
    for log in product["logs"].iterdir():
        text = log.read_text(errors="replace")
        assert "NOPERM" not in text and "no permissions" not in text, f"{log.name}:\n{text[-3000:]}"


def test_a_replica_follows_its_primary_over_tls_as_the_replication_user(tls_redis, tmp_path):
    """The --ha layout's replication, as the config lines the deploy writes for it (items 1-4 build the rest)."""
    port = free_port()
    conf = "\n".join(["port 0", f"tls-port {port}", "bind 127.0.0.1",
                      *config_files.tls_lines(str(tls_redis.tls_dir)), f'dir "{tmp_path}"', 'save ""',
                      *config_files.replica_lines(tls_redis.secrets, "127.0.0.1", tls_redis.port), ""])
    (tmp_path / "replica.conf").write_text(conf)
    process = subprocess.Popen([find_binary(), str(tmp_path / "replica.conf")], stdout=open(tmp_path / "log", "ab"),
                               stderr=subprocess.STDOUT)
    try:
        tls_redis.client().set("inferq:job:replicated", "yes")
        replica = redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=tls_redis.ca, socket_timeout=2)
        processes.wait_until(lambda: replica.get("inferq:job:replicated") == b"yes", 20, "replica", process,
                             tmp_path / "log")
        assert replica.info("replication")["master_link_status"] == "up"
    finally:
        process.terminate()
        process.wait(10)


def test_a_sentinel_watches_the_primary_over_tls_as_the_sentinel_user(tls_redis, tmp_path):
    """The --ha layout's Sentinel, as sentinel_conf writes it: TLS on its own port, TLS to the primary, logged in
    as inferq-sentinel, with nothing refused."""
    admin = tls_redis.client()
    admin.execute_command("ACL", "LOG", "RESET")
    port = free_port()
    conf = config_files.sentinel_conf(tls_redis.secrets, "127.0.0.1", tls_redis.port, port, str(tls_redis.tls_dir))
    (tmp_path / "sentinel.conf").write_text(conf + f'dir "{tmp_path}"\n')  # Sentinel rewrites its own file
    log = tmp_path / "sentinel.log"
    process = subprocess.Popen([find_binary(), str(tmp_path / "sentinel.conf"), "--sentinel"],
                               stdout=open(log, "ab"), stderr=subprocess.STDOUT)
    try:
        sentinel = redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=tls_redis.ca, socket_timeout=2)

        def watching() -> bool:
            master = sentinel.sentinel_master("inferq")
            return master["is_master"] and not master["is_disconnected"] and not master["is_sdown"] \
                and master["info-refresh"] < 10_000

        processes.wait_until(watching, 20, "sentinel", process, log)
        users = {entry["name"] for entry in admin.client_list() if entry.get("user") == "inferq-sentinel"}
        assert users, admin.client_list()  # its connections to the primary are the sentinel user's
        assert admin.execute_command("ACL", "LOG") == []
    finally:
        process.terminate()
        process.wait(10)
