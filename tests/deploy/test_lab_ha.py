"""The --ha layout deployed in a network-namespace lab of its own (issue 20): two orchestrators and a worker host,
Redis on all three (a primary and two replicas, TLS, the role users), a Sentinel on each; then the first
orchestrator is lost while a client with both API addresses submits without pause; `fab status` says what is
left; then the host comes back and `fab deploy` makes it a replica of the new primary.

The lab is the package's (tests/deploy/cluster.py) with other hosts and a tag of its own, so it can run beside
the package's cluster: orchestrator (10.231.0.11), orchestrator-2 (.12) and worker-1 (.13, two worker
containers, the standby's Redis replica and Sentinel). Losing a host is done as a host is lost: every process in
its namespace is killed (sshd, Redis, its Sentinel, the API, Flower, nginx) and its link is taken down, so
nothing answers at its address any more, not even a refusal.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests import holders
from tests.deploy.cluster import Cluster, running
from tests.deploy.commands import DEPLOY, STATUS, UPDATE
from tests.deploy.conftest import ROOT
from tests.figures import record

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

HA_HOSTS = ["orchestrator", "orchestrator-2", "worker-1"]
BEFORE_CUT = 20
"""Jobs accepted before the first orchestrator is lost."""
AFTER_CUT = 20
"""Jobs accepted after it, through the second orchestrator, before the client stops."""
RECOVERY_LIMIT = 120
"""Seconds after the cut by which jobs must be accepted again."""


@pytest.fixture(scope="module")
def ha(tmp_path_factory, tiny_model, container_base, worker_image):
    """The --ha lab, deployed once by `fab deploy`."""
    with running(Cluster(tmp_path_factory.mktemp("lab-ha"), tiny_model, container_base, hosts=HA_HOSTS,
                         container_hosts=["worker-1"], tag="h")) as made:
        made.first = made.fab(DEPLOY)
        yield made


def address(ha: Cluster, name: str) -> str:
    return next(h.address for h in ha.lab.hosts if h.name == name)


def sentinel_says_primary(ha: Cluster, on: str) -> str:
    """The primary's address as the Sentinel on host `on` names it."""
    ca = ha.tmp / "hosts" / on / "etc" / "tls" / "redis-ca.crt"
    done = subprocess.run([*ha.lab.on_host(on), "redis-cli", "--tls", "--cacert", str(ca), "-h", address(ha, on),
                           "-p", "26379", "--raw", "SENTINEL", "get-master-addr-by-name", "inferq"],
                          capture_output=True, text=True, timeout=30)
    return done.stdout.split()[0] if done.stdout.split() else done.stderr


def test_an_ha_deploy_replicates_redis_twice_and_each_api_has_its_own_certificate(ha):
    out = ha.first.stdout
    assert "redis: 3 Sentinels watch the primary and 2 replicas" in out, out[-3000:]
    for name in ("orchestrator", "orchestrator-2"):
        assert f"succeeded through https://{address(ha, name)}" in out, out[-3000:]
    # Each orchestrator shows a certificate of its own (its key never leaves it and the operator's machine).
    assert ha.api_sha256("orchestrator") != ha.api_sha256("orchestrator-2")
    status = ha.fab(STATUS).stdout
    assert "redis: primary orchestrator; replicas: orchestrator-2 up, worker-1 up; Sentinels answering: 3 of 3" \
        in status, status
    assert sentinel_says_primary(ha, "worker-1") == address(ha, "orchestrator")
    # A second deploy writes nothing and restarts nothing: Redis and the Sentinels keep their own files.
    again = ha.fab(DEPLOY).stdout
    assert "deploy done: 0 change(s)" in again, again[-3000:]


def test_an_ha_update_goes_one_orchestrator_at_a_time_each_smoked_through_its_own_api(ha):
    out = ha.fab(UPDATE).stdout
    first, second = (f"succeeded through https://{address(ha, name)}" for name in ("orchestrator", "orchestrator-2"))
    assert out.index(first) < out.index("orchestrator-2: api") < out.index(second), out[-3000:]
    assert "redis: 3 Sentinels watch the primary and 2 replicas" in out and "worker-1: updated" in out, out[-3000:]
    assert sentinel_says_primary(ha, "worker-1") == address(ha, "orchestrator")


def accepted_lines(log) -> list[dict]:
    if not log.exists():
        return []
    return [entry for entry in map(json.loads, log.read_text().splitlines()) if "accepted" in entry]


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout:.0f}s")
        time.sleep(0.5)


def lose_host(ha: Cluster, name: str) -> None:
    """Every process of the host killed, then its link down: it is gone, as an instance that died."""
    host = next(h for h in ha.lab.hosts if h.name == name)
    for _ in range(20):
        pids = subprocess.run(["ip", "netns", "pids", host.namespace], capture_output=True, text=True).stdout.split()
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    subprocess.run([*ha.lab.exec_prefix(host.namespace), "ip", "link", "set", "eth0", "down"], check=True)


def save_worker_logs(ha: Cluster, where) -> None:
    """The worker containers' logs, beside the test's other files (what they did around the cut)."""
    for name in ha.containers("worker-1"):
        container = ha.containers("worker-1")[name]["id"]
        done = ha.on_container_host("podman", "logs", container, check=False, host="worker-1")
        (where / f"{name}.log").write_text(done.stdout + done.stderr)


REPLICATION_EVENTS = ("MASTER MODE", "resynchronization", "Full resync", "Connection with master lost", "+odown",
                      "+switch-master", "+selected-slave", "+failover-state")
"""The lines of the hosts' Redis and Sentinel logs that say which node got which part of the stream."""


def explain_lost(ha: Cluster, tmp_path, summary: dict, entries: list[dict], cut: float) -> str:
    """What is known of the jobs the client found lost: its own log of their submits (seconds from the cut), every
    line of the workers' and hosts' logs that names them, and the replication events (CI keeps only this text)."""
    lines = [json.dumps({key: value for key, value in summary.items() if key != "finished"})]
    worker_logs, host_logs = sorted(tmp_path.glob("*.log")), sorted((ha.tmp / "hosts").glob("*/log/*.log"))
    for job_id in summary["lost"][:5]:
        for entry in entries:
            if entry.get("accepted") == job_id:
                lines.append(f"{job_id}: submitted at cut{entry['t'] - cut:+.3f}s, answered at "
                             f"cut{entry['done'] - cut:+.3f}s via {entry['via']}")
        lines += holders.lines_naming(worker_logs, job_id, 10, tmp_path)
        lines += holders.lines_naming(host_logs, job_id, 10, ha.tmp / "hosts")
    for path in host_logs:
        events = [line for line in path.read_text(errors="replace").splitlines()
                  if any(event in line for event in REPLICATION_EVENTS)]
        lines += [f"  {path.relative_to(ha.tmp / 'hosts')}: {line[:300]}" for line in events[-12:]]
    return "\n".join(lines)


def test_losing_the_first_orchestrator_loses_no_accepted_job(ha, tmp_path):
    log, stop = tmp_path / "client.jsonl", tmp_path / "stop"
    apis = ",".join(f"https://{address(ha, name)}" for name in ("orchestrator", "orchestrator-2"))
    pins = ",".join(ha.api_sha256(name) for name in ("orchestrator", "orchestrator-2"))
    key = json.loads((ha.secrets / "lab" / "cluster-secrets.json").read_text())["api_key"]
    client = subprocess.Popen(
        [*ha.lab.exec_prefix(ha.lab.admin), sys.executable, "-m", "tests.deploy.ha_client", "--api", apis,
         "--pins", pins, "--log", str(log), "--stop", str(stop)],
        cwd=ROOT, env={**os.environ, "INFERQ_API_KEY": key, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: len(accepted_lines(log)) >= BEFORE_CUT, 120, f"{BEFORE_CUT} jobs accepted")
        lose_host(ha, "orchestrator")
        cut = time.time()  # from here nothing of the first orchestrator answers
        # Submits started after the cut (one in flight at the cut may be answered by either API).
        after = lambda: [e for e in accepted_lines(log) if e["t"] > cut]  # noqa: E731
        wait_for(lambda: len(after()) >= AFTER_CUT, RECOVERY_LIMIT + 60, f"{AFTER_CUT} jobs accepted after the cut")
        stop.touch()
        out, err = client.communicate(timeout=300)
    finally:
        stop.touch()
        if client.poll() is None:
            client.kill()
        save_worker_logs(ha, tmp_path)
    assert client.returncode == 0, err[-3000:]
    summary = json.loads(out.strip().splitlines()[-1])
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    refused = [e for e in entries if "refused" in e and e["t"] > cut]
    unreachable = [e for e in entries if "unreachable" in e and e["t"] > cut]
    # Recovery: the first submit started after the cut is answered 202 this long after it; its job (or any job
    # accepted after the cut) is finished by a worker this long after it.
    recovery_s = after()[0]["done"] - cut
    later = [summary["finished"][e["accepted"]] for e in after() if e["accepted"] in summary["finished"]]
    new_primary = sentinel_says_primary(ha, "orchestrator-2")
    # The operator asks what is left: `fab status` moves on to the second orchestrator in one short try.
    asked_at = time.monotonic()
    status = ha.fab(STATUS, check=False)
    status_s = time.monotonic() - asked_at
    record("deploy failover", hosts=len(HA_HOSTS), accepted=summary["accepted"], lost=len(summary["lost"]),
           recovery_s=recovery_s, first_done_after_cut_s=min(later) - cut if later else None,
           accepted_after_cut=len(after()), refused_after_cut=len(refused), unreachable_after_cut=len(unreachable),
           new_primary=next(h.name for h in ha.lab.hosts if h.address == new_primary), status_s=status_s)
    assert summary["lost"] == [], explain_lost(ha, tmp_path, summary, entries, cut)
    assert summary["succeeded"] == summary["accepted"]
    assert recovery_s < RECOVERY_LIMIT
    # Every job accepted after the cut came through the second orchestrator's API, the first being gone.
    assert {e["via"] for e in after()} == {f"https://{address(ha, 'orchestrator-2')}"}
    assert new_primary in (address(ha, "orchestrator-2"), address(ha, "worker-1")), new_primary
    assert status.returncode == 0, (status.stdout + status.stderr)[-3000:]
    assert f"API: https://{address(ha, 'orchestrator')} does not answer" in status.stdout, status.stdout
    assert "Sentinels answering: 2 of 3" in status.stdout and "orchestrator down" in status.stdout, status.stdout


def bring_back(ha: Cluster, name: str) -> None:
    """The lost host boots again, as an instance rebooted: its link up and its sshd (same disk, same host key).
    Its services stay down until `fab deploy` starts them (systemd would at boot, before any deploy), and its
    files are as it left them: its Redis's says it is the primary, its Sentinel's names it."""
    host = next(h for h in ha.lab.hosts if h.name == name)
    subprocess.run([*ha.lab.exec_prefix(host.namespace), "ip", "link", "set", "eth0", "up"], check=True)
    ha.lab.start_sshd(name, 22, ha.lab.host_keys[name])


def test_the_lost_orchestrator_back_rejoins_as_a_replica_of_the_new_primary(ha):
    """After test_losing_the_first_orchestrator_loses_no_accepted_job: the stale primary must not stay one."""
    primary_before = sentinel_says_primary(ha, "orchestrator-2")
    assert primary_before != address(ha, "orchestrator"), "run after the test that loses the first orchestrator"
    bring_back(ha, "orchestrator")
    back_at = time.monotonic()
    out = ha.fab(DEPLOY).stdout
    for name in ("orchestrator", "orchestrator-2"):
        assert f"succeeded through https://{address(ha, name)}" in out, out[-3000:]
    # What ran through the loss is left alone: the failover is no setting, so no Sentinel restarts (and forgets
    # what it knows) and no node is turned round.
    for line in ("orchestrator-2: redis unchanged", "orchestrator-2: sentinel unchanged", "worker-1: redis unchanged",
                 "worker-1: sentinel unchanged", "orchestrator: redis started"):
        assert line in out, out[-3000:]
    # The node back started as a replica of the new primary (its log's role letter S), never as a second
    # primary with what it held when it was lost.
    started = (ha.tmp / "hosts" / "orchestrator" / "log" / "redis.log").read_text().rsplit("Redis is starting", 1)[1]
    ready = next(line for line in started.splitlines() if "Ready to accept connections" in line)
    assert ":S " in ready and f"Connecting to MASTER {primary_before}" in started, started[-3000:]
    # Its link to the primary is up once it has synced; status shows it.
    expected = "Sentinels answering: 3 of 3"
    deadline = time.monotonic() + 120
    while True:
        status = ha.fab(STATUS, check=False).stdout
        if expected in status and "orchestrator up" in status:
            break
        assert time.monotonic() < deadline, status
        time.sleep(2)
    record("deploy host back", rejoined_s=time.monotonic() - back_at)
    # No failover back to it: the primary stays the one the Sentinels chose while it was gone.
    assert sentinel_says_primary(ha, "orchestrator") == primary_before
    assert f"redis: primary {next(h.name for h in ha.lab.hosts if h.address == primary_before)};" in status, status
