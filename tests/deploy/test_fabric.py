"""The Fabric tasks over real SSH, against sshd hosts in network namespaces (tests/deploy/cluster.py).

One orchestrator and two worker hosts, whose workers are containers; the
README's fab commands run in the lab's admin namespace.
test_fabric_containers.py goes on with the container hosts.
"""
from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys

import pytest

from inferq.deploy import host_keys
from tests.deploy.cluster import CONTAINER_HOSTS, STRAY, mem_total
from tests.deploy.commands import DEPLOY, LOGS, STATUS, SUBMIT, UPDATE
from tests.deploy.conftest import BIN, ROOT, run_command
from tests.deploy.netns import make_host_key

# The first test sets the cluster up: the image build (cached layers) and its shipping take minutes.
pytestmark = pytest.mark.timeout(1200)


def test_deploy_configures_every_host_and_runs_a_smoke_job(cluster):
    out = cluster.first.stdout
    assert "4 worker(s) answer a Celery ping" in out, out
    # The smoke job goes through the public API, TLS and all, as a client's would.
    smoke = re.search(r"smoke job \S+ succeeded through https://10\.231\.0\.11 on (\S+)", out)
    assert smoke and re.fullmatch(r"worker@worker-[12]-w[12]", smoke.group(1)), out
    assert set(cluster.pids("orchestrator")) == {"redis", "api", "flower", "proxy"}
    assert f"API: https://10.231.0.11 (TLS, certificate SHA-256 {cluster.api_sha256()};" in out
    for host in CONTAINER_HOSTS:
        containers = cluster.containers(host)
        assert sorted(containers) == ["worker-1", "worker-2"], containers
        assert {c["state"] for c in containers.values()} == {"running"}


def test_the_release_is_the_commit_and_an_untracked_file_never_ships(cluster):
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.strip()
    described = re.search(r"^release (\S+) \(commit ([0-9a-f]{12})(, dirty: .*)?\)$", cluster.first.stdout, re.M)
    assert described and described.group(2) == head[:12], cluster.first.stdout
    assert described.group(1).endswith("-dirty") == bool(cluster.ship_flags)
    current = (cluster.tmp / "hosts" / "orchestrator" / "current").resolve()
    assert current.name == described.group(1) and (current / "deploy" / "release.py").exists()
    assert STRAY.exists() and not (current / STRAY.name).exists()


def test_redis_is_configured_with_password_aof_private_bind_and_a_memory_limit(cluster):
    orchestrator = cluster.tmp / "hosts" / "orchestrator"
    conf = (orchestrator / "etc" / "redis.conf").read_text().splitlines()
    password = json.loads((cluster.secrets / "lab" / "cluster-secrets.json").read_text())["redis_password"]
    assert f"requirepass {password}" in conf
    assert "appendonly yes" in conf and "maxmemory-policy noeviction" in conf
    assert "bind 10.231.0.11 127.0.0.1" in conf
    assert (orchestrator / "redis" / "appendonlydir").is_dir()
    # maxmemory: the inventory's share of the memory the deploy read on the host (the lab's: this machine's).
    fraction = json.loads(cluster.inventory.read_text())["redis_memory_fraction"]
    limit = int(mem_total() * fraction)
    assert f"maxmemory {limit}" in conf
    # From another host, Redis answers only over TLS, trusting the cluster's CA, with the password; and runs
    # with that limit. Without the CA the certificate does not verify; a plain client gets nothing.
    assert "port 0" in conf and "tls-port 6379" in conf
    ca = str(cluster.secrets / "lab" / "cluster-ca.crt")
    probe = ("import redis,sys; r=redis.Redis(host='10.231.0.11', ssl=sys.argv[3] == 'tls', "
             "ssl_ca_certs=sys.argv[2] or None, password=sys.argv[1] or None, socket_timeout=5); "
             "print(r.ping(), r.info('memory')['maxmemory'])")
    assert cluster.in_admin(sys.executable, "-c", probe, password, ca, "tls").stdout.split() == ["True", str(limit)]
    refused = cluster.in_admin(sys.executable, "-c", probe, "", ca, "tls")
    assert refused.returncode != 0 and re.search(r"NOAUTH|AuthenticationError", refused.stderr), refused.stderr[-300:]
    no_ca = cluster.in_admin(sys.executable, "-c", probe, password, "", "tls")
    assert no_ca.returncode != 0 and "certificate verify failed" in no_ca.stderr, no_ca.stderr[-300:]
    plain = cluster.in_admin(sys.executable, "-c", probe, password, "", "plain")
    assert plain.returncode != 0 and "ConnectionError" in plain.stderr, plain.stderr[-300:]


def test_workers_redis_user_cannot_administer_or_wipe_redis(cluster):
    # The workers' own login (from their env file) does the queue's work, and neither it nor a script it runs
    # can reconfigure, list or wipe Redis (inferq.redis_acl; tests/security/test_redis_acl.py proves every
    # role's rules in full). DEBUG is refused twice over: not in the ACL, and enable-debug-command no.
    worker_env = (cluster.tmp / "hosts" / "worker-1" / "worker.env").read_text()
    url = re.search(r"^REDIS_URL=(\S+)$", worker_env, re.M).group(1)
    assert url.startswith("rediss://inferq-worker:")
    probe = (
        "import redis,sys\n"
        "r = redis.Redis.from_url(sys.argv[1], ssl_ca_certs=sys.argv[2])\n"
        "print('ping', r.ping(), r.lpush('inferq:malformed', 1), r.lpop('inferq:malformed'))\n"
        "for command in (('CONFIG', 'GET', 'dir'), ('FLUSHALL',), ('SWAPDB', '0', '1'), ('KEYS', '*'),\n"
        "                ('DEBUG', 'SLEEP', '0'), ('GET', 'outside'),\n"
        "                ('EVAL', \"return redis.call('FLUSHALL')\", '0')):\n"
        "    try:\n"
        "        r.execute_command(*command); print(command[0], 'ALLOWED')\n"
        "    except redis.exceptions.ResponseError as e:\n"
        "        refusals = ('no permissions', \"can't run this command\", 'command not allowed')\n"
        "        print(command[0], 'refused' if any(r in str(e) for r in refusals) else type(e).__name__)\n"
    )
    out = cluster.in_admin(sys.executable, "-c", probe, url, str(cluster.secrets / "lab" / "cluster-ca.crt"))
    lines = out.stdout.split("\n")
    assert lines[0] == "ping True 1 b'1'", (lines, out.stderr[-1000:])
    assert lines[1:8] == ["CONFIG refused", "FLUSHALL refused", "SWAPDB refused", "KEYS refused", "DEBUG refused",
                          "GET refused", "EVAL refused"], lines


def test_env_files_and_secrets_are_readable_by_their_owner_only(cluster):
    files = [cluster.tmp / "hosts" / "orchestrator" / "etc" / "orchestrator.env",
             cluster.tmp / "hosts" / "orchestrator" / "etc" / "flower.env",
             cluster.tmp / "hosts" / "orchestrator" / "etc" / "redis.conf",
             cluster.secrets / "lab" / "cluster-secrets.json"]
    for path in files:
        info = path.stat()
        assert stat.S_IMODE(info.st_mode) == 0o600 and info.st_uid == 0, path
    for host in CONTAINER_HOSTS:  # the containers' secrets file: their user's alone (it is mounted into them)
        info = (cluster.tmp / "hosts" / host / "worker.env").stat()
        assert stat.S_IMODE(info.st_mode) == 0o600 and info.st_uid == 10001, host
    worker_env = (cluster.tmp / "hosts" / "worker-1" / "worker.env").read_text()
    assert "REDIS_URL=rediss://inferq-worker:" in worker_env and "@10.231.0.11:6379/0" in worker_env
    assert "INFERQ_TORCH_THREADS=1" in worker_env
    webhook = json.loads((cluster.secrets / "lab" / "cluster-secrets.json").read_text())["webhook_secret"]
    assert f"INFERQ_WEBHOOK_SECRET={webhook}\n" in worker_env


def ssh_options(cluster) -> list[str]:
    """OpenSSH's client as docs/deploy.md runs it: the cluster's key, its pinned host keys, nothing else."""
    return ["-F", "/dev/null", "-i", str(cluster.lab.key), "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
            "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={cluster.known_hosts}"]


def test_flower_is_reached_only_through_an_ssh_tunnel_and_asks_for_its_login(cluster):
    data = json.loads((cluster.secrets / "lab" / "cluster-secrets.json").read_text())
    # Flower listens on the orchestrator's loopback: from another host there is nothing to connect to.
    direct = cluster.in_admin("curl", "-s", "--max-time", "10", "http://10.231.0.11:5555/workers")
    assert direct.returncode == 7, (direct.returncode, direct.stdout)  # 7: could not connect
    tunnel = subprocess.Popen([*cluster.lab.exec_prefix(cluster.lab.admin), "ssh", *ssh_options(cluster), "-N",
                               "-o", "ExitOnForwardFailure=yes", "-L", "127.0.0.1:15555:127.0.0.1:5555",
                               "root@10.231.0.11"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        def code(*auth: str) -> str:
            # --retry-connrefused: the tunnel may still be opening its port.
            return cluster.in_admin("curl", "-s", "--retry", "20", "--retry-connrefused", "--retry-delay", "1",
                                    "-o", "/dev/null", "-w", "%{http_code}", *auth,
                                    "http://127.0.0.1:15555/workers").stdout

        assert code() == "401"
        assert code("-u", f"{data['flower_user']}:wrong") == "401"
        assert code("-u", f"{data['flower_user']}:{data['flower_password']}") == "200"
    finally:
        tunnel.terminate()
        _, err = tunnel.communicate(timeout=30)
    assert "Host key verification failed" not in err


def test_the_api_is_public_only_over_tls_and_wants_the_key(cluster):
    data = json.loads((cluster.secrets / "lab" / "cluster-secrets.json").read_text())
    # gunicorn listens on the orchestrator's loopback: plain HTTP from another host reaches nothing.
    plain = cluster.in_admin("curl", "-s", "--max-time", "10", "http://10.231.0.11:5000/healthz")
    assert plain.returncode == 7, (plain.returncode, plain.stdout)
    # The certificate is the cluster's own: no CA vouches for it (curl exits 60), its fingerprint does.
    assert cluster.in_admin("curl", "-s", "--max-time", "10", "https://10.231.0.11/healthz").returncode == 60
    # curl cannot pin a certificate's fingerprint (-k: no check at all); the pinning clients follow.
    post = ["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", "-XPOST", "https://10.231.0.11/jobs",
            "-H", "Content-Type: application/json", "-d", '{"text": "no key"}']
    assert cluster.in_admin(*post).stdout == "401"
    assert cluster.in_admin(*post, "-H", f"X-API-Key: {data['api_key']}").stdout == "202"
    for private in ("/metrics", "/readyz"):  # off the Internet: reached on the host, or through SSH
        hidden = cluster.in_admin("curl", "-sk", "-w", " %{http_code}", f"https://10.231.0.11{private}").stdout
        assert hidden.endswith(" 404") and '"error": "not_found"' in hidden, hidden
    # The inferq CLI with the fingerprint `fab deploy` printed: the job goes through; another one is refused.
    cli = [str(BIN / "inferq"), "--api", "https://10.231.0.11", "--api-key", data["api_key"]]
    done = cluster.in_admin(*cli, "--api-cert-sha256", cluster.api_sha256(), "submit", "pinned", "--wait", "60")
    assert done.returncode == 0 and json.loads(done.stdout)["status"] == "succeeded", done.stderr
    other = "ab" * 32
    refused = cluster.in_admin(*cli, "--api-cert-sha256", other, "submit", "not pinned")
    assert refused.returncode == 3 and "its TLS certificate is not the pinned one" in refused.stderr


def test_a_job_submitted_to_the_api_is_done_on_a_worker_host(cluster):
    job = json.loads(cluster.fab(SUBMIT).stdout)
    assert job["status"] == "succeeded", job
    assert re.fullmatch(r"worker@worker-[12]-w[12]", job["worker"]["hostname"])


def test_status_reports_workers_queue_processes_and_the_image_per_host(cluster):
    out = cluster.fab(STATUS).stdout
    assert "workers online: 4" in out and "queue depth: 0" in out
    image = r"image ([0-9a-f]{12}) \(localhost/inferq-worker:[0-9a-f]{12}\)"
    found = [re.search(rf"{host}: worker-1 running {image}; worker-2 running {image}", out) for host in CONTAINER_HOSTS]
    assert all(found) and len({m.group(i) for m in found for i in (1, 2)}) == 1, out
    assert f"image: every container runs {found[0].group(1)}" in out


def test_logs_shows_each_service(cluster):
    out = cluster.fab(LOGS).stdout
    for header in ("== orchestrator api", "== orchestrator flower", "== worker-1 worker-2", "== worker-2 worker-1"):
        assert header in out


def test_a_second_deploy_changes_nothing_and_breaks_nothing(cluster):
    before = cluster.pids("orchestrator")
    containers = {host: cluster.containers(host) for host in CONTAINER_HOSTS}
    with STRAY.open("a") as stray:  # the untracked file grows between deploys, as a log does: nothing changes
        stray.write("grown during the deploy tests\n" * 100)
    out = cluster.fab(DEPLOY).stdout
    assert "deploy done: 0 change(s)" in out, out
    assert cluster.pids("orchestrator") == before
    # The image is built, shipped and run once.
    assert {host: cluster.containers(host) for host in CONTAINER_HOSTS} == containers
    assert "already built" in out and "loaded" not in out
    assert "smoke job" in out and "succeeded" in out


def test_rolling_update_goes_host_by_host_and_worker_by_worker(cluster):
    containers = {host: cluster.containers(host) for host in CONTAINER_HOSTS}
    orchestrator = cluster.pids("orchestrator")
    out = cluster.fab(UPDATE).stdout
    assert out.index("worker-1: updated") < out.index("worker-2: updated")
    assert re.search(r"^fleet: every worker container runs \S+ \([0-9a-f]{12}\)$", out, re.M), out
    # Containers are replaced for a new image or configuration only (test_fabric_containers.py).
    assert {host: cluster.containers(host) for host in CONTAINER_HOSTS} == containers
    # The orchestrator's services restart when their inputs change; this release changed none.
    assert "orchestrator: api unchanged" in out and cluster.pids("orchestrator") == orchestrator
    assert json.loads(cluster.fab(SUBMIT).stdout)["status"] == "succeeded"


def inventory_with(cluster, tmp_path, port: int, pins: list[tuple[str, int, str]]):
    """A copy of the lab's inventory with worker-2 on another SSH port, and its own known_hosts of these pins."""
    inventory = json.loads(cluster.inventory.read_text())
    inventory["hosts"][2]["ssh_port"] = port
    inventory["known_hosts"] = str(host_keys.write_known_hosts(tmp_path / "known_hosts", pins))
    copy = tmp_path / "inventory.json"
    copy.write_text(json.dumps(inventory))
    return copy


def pins(cluster, **extra: tuple[int, str]) -> list[tuple[str, int, str]]:
    """The lab's pins, plus worker-2 on other ports (port, public key)."""
    found = [(h.address, 22, cluster.lab.host_keys[h.name].public) for h in cluster.lab.hosts]
    return found + [("10.231.0.13", port, key) for port, key in extra.values()]


def fab_in_admin(cluster, command: str, **kwargs):
    admin = " ".join(cluster.lab.exec_prefix(cluster.lab.admin))
    return run_command(f"{admin} {command}", {}, ROOT, **kwargs)


def test_an_unreachable_host_is_retried_then_one_line(cluster, tmp_path):
    worker_2 = cluster.lab.host_keys["worker-2"].public
    copy = inventory_with(cluster, tmp_path, 2222, pins(cluster, w=(2222, worker_2)))  # nothing listens there
    result = fab_in_admin(cluster, f"fab -r deploy status --inventory {copy} --secrets {cluster.secrets}",
                          check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "fab: SSH failed: [Errno None] Unable to connect to port 2222 on 10.231.0.13; "
        "check the inventory's addresses and the admin CIDR"], result.stderr
    # A host still booting refuses for a while: each wait is on stdout, doubling, and they stop.
    retries = re.findall(r"^SSH to worker-2 \(\[10\.231\.0\.13\]:2222\): .*Unable to connect to port 2222.*; "
                         r"retry (\d) of 4 in (\d+)s$", result.stdout, re.M)
    assert retries == [("1", "1"), ("2", "2"), ("3", "4"), ("4", "8")], result.stdout


def test_a_host_whose_sshd_comes_up_late_is_waited_for(cluster, tmp_path):
    key = cluster.lab.host_keys["worker-2"]
    copy = inventory_with(cluster, tmp_path, 2023, pins(cluster, w=(2023, key.public)))
    admin = cluster.lab.exec_prefix(cluster.lab.admin)
    status = subprocess.Popen([*admin, str(BIN / "fab"), "-r", "deploy", "status", "--inventory", str(copy),
                               "--secrets", str(cluster.secrets)], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    seen = []
    for line in status.stdout:  # until fab says it is waiting for worker-2 (or ends)
        seen.append(line)
        if "retry 1 of 4" in line:
            cluster.lab.start_sshd("worker-2", 2023, key)  # the host finishes booting
            break
    out, err = status.communicate(timeout=300)
    assert status.returncode == 0, (seen, out, err)
    assert "worker-2: worker-1 running" in "".join(seen) + out


def test_a_changed_host_key_is_refused_before_anything_is_sent(cluster, tmp_path):
    # Someone else answers at worker-2's address (here: on port 2022), with a key that is not the one pinned.
    cluster.lab.start_sshd("worker-2", 2022, make_host_key(tmp_path / "impostor_key"))
    pinned = cluster.lab.host_keys["worker-2"].public
    copy = inventory_with(cluster, tmp_path, 2022, pins(cluster, w=(2022, pinned)))
    result = fab_in_admin(cluster, f"fab -r deploy status --inventory {copy} --secrets {cluster.secrets}",
                          check=False)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert re.fullmatch(
        r"fab: worker-2 \(\[10\.231\.0\.13\]:2022\) presented host key SHA256:\S+, not the one pinned in "
        rf"{re.escape(str(tmp_path))}/known_hosts \({re.escape(host_keys.fingerprint(pinned))}\): the host was "
        r"replaced or someone is in between; nothing was sent to it\. If you replaced it, run `inferq-provision up` "
        r"to pin its new key", lines[0]), lines[0]
    # It never got as far as authenticating us, let alone a command.
    assert "Accepted publickey" not in cluster.lab.sshd_log("worker-2", 2022)
    # A host with no pin at all is refused the same way: never trusted on first use.
    unpinned = inventory_with(cluster, tmp_path, 2022, pins(cluster))
    result = fab_in_admin(cluster, f"fab -r deploy status --inventory {unpinned} --secrets {cluster.secrets}",
                          check=False)
    assert result.stderr.strip().splitlines() == [
        f"fab: worker-2 ([10.231.0.13]:2022) has no pinned key in {tmp_path}/known_hosts: run `inferq-provision up` "
        "to pin it; nothing was sent to it"], result.stderr


def test_no_secret_was_printed(cluster):
    printed = "\n".join(cluster.outputs)
    assert printed
    for value in cluster.secret_values():
        assert value not in printed


def test_old_releases_are_pruned_but_the_current_one_stays(cluster):
    remote = cluster.tmp / "hosts" / "orchestrator" / "prune-check"
    for age, name in enumerate(["r5", "r4", "r3", "r2", "r1"]):  # r1 newest
        (remote / "releases" / name).mkdir(parents=True)
        os.utime(remote / "releases" / name, (1_000_000 + age * 100, 1_000_000 + age * 100))
    (remote / "current").symlink_to(remote / "releases" / "r4")  # an older release is the current one
    probe = ("import sys; from deploy import connections, inventory, release\n"
             "cluster = inventory.read(sys.argv[1])\n"
             "with connections.connect(cluster, cluster.orchestrator) as c:\n"
             "    print(' '.join(p.rsplit('/', 1)[1] for p in release.prune(c, sys.argv[2], 3)))\n")
    removed = cluster.in_admin(sys.executable, "-c", probe, str(cluster.inventory), str(remote))
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.split() == ["r3", "r5"]
    assert sorted(p.name for p in (remote / "releases").iterdir()) == ["r1", "r2", "r4"]


HOLD = """
import sys, time
from pathlib import Path
from inferq.deploy import connections, deploy_lock, inventory
cluster = inventory.read(sys.argv[1])
with connections.connect(cluster, cluster.orchestrator) as c:
    deploy_lock.acquire(c, cluster, "update", False, print)
print("held", flush=True)
"""


def test_a_second_deploy_is_refused_while_one_holds_the_lock_and_a_stale_lock_can_be_broken(cluster):
    # Another operator's update took the lock (and died holding it, as this process exits without releasing).
    held = cluster.in_admin(sys.executable, "-c", HOLD, str(cluster.inventory))
    assert held.returncode == 0 and held.stdout.strip() == "held", held.stderr[-1500:]
    lock = json.loads((cluster.tmp / "hosts" / "orchestrator" / "deploy.lock").read_text())
    refused = cluster.fab(UPDATE, check=False)
    assert refused.returncode == 1 and refused.stderr.strip().splitlines() == [
        f"fab: cluster lab is locked by {lock['holder']}, running update since {lock['since']}: wait for it to "
        "finish; if it died, rerun with --break-lock"], refused.stderr
    assert "restarted" not in refused.stdout  # nothing was touched
    out = cluster.fab(UPDATE, extra=" --break-lock").stdout
    assert f"broke the deploy lock of {lock['holder']} (update since {lock['since']})" in out
    assert not (cluster.tmp / "hosts" / "orchestrator" / "deploy.lock").exists()  # released at the end
