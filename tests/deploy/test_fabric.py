"""The Fabric tasks over real SSH, against sshd hosts in network namespaces (process runtime).

One orchestrator and two worker hosts; the README's fab commands run in the
lab's admin namespace. Needs root: outside CI these tests skip with the
reason; with CI=true they fail instead.
"""
from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys

import pytest

from tests.deploy.commands import DEPLOY, FAB_PATHS, LOGS, STATUS, SUBMIT, UPDATE
from tests.deploy.conftest import ROOT, run_command
from tests.deploy.netns import Lab, LabUnavailable, unavailable_reason

HOSTS = ["orchestrator", "worker-1", "worker-2"]


def refuse(reason: str):
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the SSH deploy tests: {reason}")
    pytest.skip(reason)


class Cluster:
    """The lab, its inventory and secrets, and a way to run commands in its admin namespace."""

    def __init__(self, lab: Lab, tmp, tiny_model):
        self.lab, self.tmp = lab, tmp
        self.inventory = tmp / "inventory.json"
        self.secrets = tmp / "secrets"
        hosts = [{"name": h.name, "role": "orchestrator" if h.name == "orchestrator" else "worker",
                  "public_ip": h.address, "private_ip": h.address, "instance_id": f"netns:{h.namespace}",
                  "remote_dir": str(tmp / "hosts" / h.name)} for h in lab.hosts]
        self.inventory.write_text(json.dumps({
            "cluster": "lab", "hosts": hosts, "key_file": str(lab.key), "ssh_user": "root", "runtime": "process",
            "code_dir": str(ROOT), "python": sys.prefix, "containers_per_worker": 2,
            "env": {"INFERQ_MODEL": str(tiny_model), "INFERQ_HEARTBEAT_SECONDS": "0.5"},
        }))
        self.outputs: list[str] = []

    def fab(self, template: str, check: bool = True) -> subprocess.CompletedProcess:
        command = (template + FAB_PATHS).format(inventory=self.inventory, secrets=self.secrets)
        result = run_command(" ".join(self.lab.exec_prefix(self.lab.admin)) + " " + command, {}, ROOT, check=check)
        self.outputs.append(result.stdout + result.stderr)
        return result

    def in_admin(self, *command: str) -> subprocess.CompletedProcess:
        return subprocess.run([*self.lab.exec_prefix(self.lab.admin), *command], capture_output=True, text=True,
                              timeout=60)

    def pids(self, host: str) -> dict[str, str]:
        run = self.tmp / "hosts" / host / "run"
        return {p.stem: p.read_text().strip() for p in sorted(run.glob("*.pid"))}

    def secret_values(self) -> list[str]:
        data = json.loads((self.secrets / "lab" / "cluster-secrets.json").read_text())
        return [v for k, v in data.items() if k != "flower_user"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, tiny_model):
    """The lab with the cluster deployed once by `fab deploy`."""
    reason = unavailable_reason()
    if reason:
        refuse(reason)
    tmp = tmp_path_factory.mktemp("lab")
    lab = Lab(tmp, HOSTS)
    try:
        try:
            lab.up()
        except LabUnavailable as exc:
            refuse(str(exc))
        made = Cluster(lab, tmp, tiny_model)
        made.first = made.fab(DEPLOY)
        yield made
    finally:
        lab.down()


def test_deploy_configures_every_host_and_runs_a_smoke_job(cluster):
    out = cluster.first.stdout
    assert "4 worker(s) answer a Celery ping" in out, out
    smoke = re.search(r"smoke job \S+ succeeded on (\S+)", out)
    assert smoke and re.fullmatch(r"worker@worker-[12]-w[12]", smoke.group(1)), out
    assert set(cluster.pids("orchestrator")) == {"redis", "api", "flower"}
    for worker in ("worker-1", "worker-2"):
        assert set(cluster.pids(worker)) == {"worker-1", "worker-2"}


def test_redis_is_configured_with_password_aof_private_bind_and_noeviction(cluster):
    orchestrator = cluster.tmp / "hosts" / "orchestrator"
    conf = (orchestrator / "etc" / "redis.conf").read_text().splitlines()
    password = json.loads((cluster.secrets / "lab" / "cluster-secrets.json").read_text())["redis_password"]
    assert f"requirepass {password}" in conf
    assert "appendonly yes" in conf and "maxmemory-policy noeviction" in conf
    assert "bind 10.231.0.11 127.0.0.1" in conf
    assert (orchestrator / "redis" / "appendonlydir").is_dir()
    # From another host, Redis answers only with the password.
    probe = "import redis,sys; r=redis.Redis(host='10.231.0.11', password=sys.argv[1] or None); print(r.ping())"
    assert cluster.in_admin(sys.executable, "-c", probe, password).stdout.strip() == "True"
    refused = cluster.in_admin(sys.executable, "-c", probe, "")
    assert refused.returncode != 0 and re.search(r"NOAUTH|AuthenticationError", refused.stderr), refused.stderr[-300:]


def test_workers_redis_user_cannot_administer_or_wipe_redis(cluster):
    # The workers' own login (from their env file) does the queue's work, and
    # neither it nor a script it runs can reconfigure or wipe Redis. (DEBUG is
    # refused twice over: the ACL's -@admin, and Redis's enable-debug-command no.)
    worker_env = (cluster.tmp / "hosts" / "worker-1" / "worker.env").read_text()
    url = re.search(r"^REDIS_URL=(\S+)$", worker_env, re.M).group(1)
    probe = (
        "import redis,sys\n"
        "r = redis.Redis.from_url(sys.argv[1])\n"
        "print('ping', r.ping(), r.lpush('acl-probe', 1), r.delete('acl-probe'))\n"
        "for command in (('CONFIG', 'GET', 'dir'), ('FLUSHALL',), ('DEBUG', 'SLEEP', '0'),\n"
        "                ('EVAL', \"return redis.call('FLUSHALL')\", '0')):\n"
        "    try:\n"
        "        r.execute_command(*command); print(command[0], 'ALLOWED')\n"
        "    except redis.exceptions.ResponseError as e:\n"
        "        refusals = ('no permissions', \"can't run this command\", 'command not allowed')\n"
        "        print(command[0], 'refused' if any(r in str(e) for r in refusals) else type(e).__name__)\n"
    )
    out = cluster.in_admin(sys.executable, "-c", probe, url).stdout.split("\n")
    assert out[0] == "ping True 1 1", out
    assert out[1:5] == ["CONFIG refused", "FLUSHALL refused", "DEBUG refused", "EVAL refused"], out


def test_env_files_and_secrets_are_readable_by_their_owner_only(cluster):
    files = [cluster.tmp / "hosts" / "orchestrator" / "etc" / "orchestrator.env",
             cluster.tmp / "hosts" / "orchestrator" / "etc" / "redis.conf",
             cluster.tmp / "hosts" / "worker-1" / "worker.env", cluster.tmp / "hosts" / "worker-2" / "worker.env",
             cluster.secrets / "lab" / "cluster-secrets.json"]
    for path in files:
        info = path.stat()
        assert stat.S_IMODE(info.st_mode) == 0o600 and info.st_uid == 0, path
    worker_env = (cluster.tmp / "hosts" / "worker-1" / "worker.env").read_text()
    assert "REDIS_URL=redis://inferq-worker:" in worker_env and "@10.231.0.11:6379/0" in worker_env
    assert "INFERQ_TORCH_THREADS=1" in worker_env


def test_flower_asks_for_its_login(cluster):
    data = json.loads((cluster.secrets / "lab" / "cluster-secrets.json").read_text())
    url = "http://10.231.0.11:5555/workers"

    def code(*auth: str) -> str:
        # --retry-connrefused: Flower may still be opening its port.
        return cluster.in_admin("curl", "-s", "--retry", "20", "--retry-connrefused", "--retry-delay", "1",
                                "-o", "/dev/null", "-w", "%{http_code}", *auth, url).stdout

    assert code() == "401"
    assert code("-u", f"{data['flower_user']}:wrong") == "401"
    assert code("-u", f"{data['flower_user']}:{data['flower_password']}") == "200"


def test_the_api_wants_the_generated_key(cluster):
    data = json.loads((cluster.secrets / "lab" / "cluster-secrets.json").read_text())
    post = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-XPOST", "http://10.231.0.11:5000/jobs",
            "-H", "Content-Type: application/json", "-d", '{"text": "no key"}']
    assert cluster.in_admin(*post).stdout == "401"
    assert cluster.in_admin(*post, "-H", f"X-API-Key: {data['api_key']}").stdout == "202"


def test_a_job_submitted_to_the_api_is_done_on_a_worker_host(cluster):
    job = json.loads(cluster.fab(SUBMIT).stdout)
    assert job["status"] == "succeeded", job
    assert re.fullmatch(r"worker@worker-[12]-w[12]", job["worker"]["hostname"])


def test_status_reports_workers_queue_and_processes(cluster):
    out = cluster.fab(STATUS).stdout
    assert "workers online: 4" in out and "queue depth: 0" in out
    assert re.search(r"worker-2: worker-1 running \(pid \d+\); worker-2 running \(pid \d+\)", out), out


def test_logs_shows_each_service(cluster):
    out = cluster.fab(LOGS).stdout
    for header in ("== orchestrator api", "== orchestrator flower", "== worker-1 worker-2", "== worker-2 worker-1"):
        assert header in out


def test_a_second_deploy_changes_nothing_and_breaks_nothing(cluster):
    before = {host: cluster.pids(host) for host in HOSTS}
    out = cluster.fab(DEPLOY).stdout
    assert "deploy done: 0 change(s)" in out, out
    assert {host: cluster.pids(host) for host in HOSTS} == before
    assert "smoke job" in out and "succeeded" in out


def test_rolling_update_replaces_workers_host_by_host(cluster):
    before = {host: cluster.pids(host) for host in ("worker-1", "worker-2")}
    orchestrator = cluster.pids("orchestrator")
    out = cluster.fab(UPDATE).stdout
    assert out.index("worker-1: updated") < out.index("worker-2: updated")
    for host, pids in before.items():
        after = cluster.pids(host)
        assert set(after) == set(pids) and all(after[name] != pid for name, pid in pids.items())
    assert cluster.pids("orchestrator") == orchestrator
    assert json.loads(cluster.fab(SUBMIT).stdout)["status"] == "succeeded"


def test_an_unreachable_host_is_one_line(cluster, tmp_path):
    inventory = json.loads(cluster.inventory.read_text())
    inventory["hosts"][2]["ssh_port"] = 2222  # nothing listens there
    broken = tmp_path / "inventory.json"
    broken.write_text(json.dumps(inventory))
    admin = " ".join(cluster.lab.exec_prefix(cluster.lab.admin))
    result = run_command(f"{admin} fab -r deploy status --inventory {broken}", {}, ROOT, check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "fab: SSH failed: [Errno None] Unable to connect to port 2222 on 10.231.0.13; "
        "check the inventory's addresses and the admin CIDR"], result.stderr


def test_no_secret_was_printed(cluster):
    printed = "\n".join(cluster.outputs)
    assert printed
    for value in cluster.secret_values():
        assert value not in printed
