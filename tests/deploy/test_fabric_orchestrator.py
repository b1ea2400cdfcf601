"""The lab's orchestrator (tests/deploy/cluster.py): its releases, and its Redis at the memory limit.

Runs after test_fabric.py and test_fabric_containers.py, on the same cluster.
A release is installed in a venv of its own and made current only once it
installs and imports (deploy.release); Redis's maxmemory is the inventory's
share of the host's memory, and the API says 429 before Redis refuses a write.
"""
from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from inferq.deploy import release
from tests.deploy.commands import SUBMIT
from tests.deploy.conftest import ROOT
from tests.figures import record

pytestmark = pytest.mark.timeout(1200)

INSTALL = """
import sys
from inferq.deploy import connections, inventory, release, runtime
from inferq.deploy.errors import DeployError
cluster = inventory.read(sys.argv[1])
lab = runtime.load(cluster)
remote_dir = cluster.orchestrator.remote_dir
with connections.connect(cluster, cluster.orchestrator) as c:
    try:
        changed = release.install(c, remote_dir, sys.argv[2], open(sys.argv[3], 'rb').read(), lab.python, lab.pip_args)
        print('current' if changed else 'unchanged')
    except DeployError as exc:
        print(exc)
"""


def variant(tmp_path: Path, name: str, change: dict[str, str]) -> Path:
    """This checkout's release with some files' contents changed; the tarball's path."""
    data = release.package(ROOT, allow_dirty=True).data  # as fab ships it (a developer's checkout may be dirty)
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(data)) as old, tarfile.open(fileobj=out, mode="w:gz") as new:
        for member in old.getmembers():
            content = old.extractfile(member).read()
            content = (content.decode() + change[member.name]).encode() if member.name in change else content
            member.size = len(content)
            new.addfile(member, io.BytesIO(content))
    path = tmp_path / f"{name}.tar.gz"
    path.write_bytes(out.getvalue())
    return path


def install(cluster, version: str, tarball: Path) -> str:
    """release.install of tarball as `version` on the lab's orchestrator, over SSH; what it said."""
    done = cluster.in_admin(sys.executable, "-c", INSTALL, str(cluster.inventory), version, str(tarball))
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def test_a_release_that_does_not_install_leaves_the_running_one_serving(cluster, tmp_path):
    orchestrator = cluster.tmp / "hosts" / "orchestrator"
    running = (orchestrator / "current").resolve()
    pids = cluster.pids("orchestrator")
    # A pin no index has: pip cannot install it, as with a typo or a withdrawn version.
    broken = variant(tmp_path, "broken", {"constraints.txt": "gunicorn==0.0.1\n"})
    said = install(cluster, "broken000000", broken)
    assert said.startswith("release broken000000 did not install on 10.231.0.11: ") and said.endswith(
        f"; it was removed, and the running release ({running.name}) is untouched"), said
    assert (orchestrator / "current").resolve() == running
    assert not (orchestrator / "releases" / "broken000000").exists()
    assert cluster.pids("orchestrator") == pids  # nothing restarted
    assert json.loads(cluster.fab(SUBMIT).stdout)["status"] == "succeeded"


def test_a_release_is_switched_to_whole_and_the_previous_one_stays_for_going_back(cluster, tmp_path):
    orchestrator = cluster.tmp / "hosts" / "orchestrator"
    running = (orchestrator / "current").resolve()
    good = variant(tmp_path, "good", {"README.md": "\none more line\n"})
    assert install(cluster, "good00000000", good) == "current"
    assert (orchestrator / "current").resolve() == orchestrator / "releases" / "good00000000"
    venv = orchestrator / "releases" / "good00000000" / "venv"
    version = subprocess.run([venv / "bin" / "python", "-c", "import sys; print(sys.version.split()[0])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    debian = subprocess.run(["/usr/bin/python3", "-c", "import sys; print(sys.version.split()[0])"],
                            capture_output=True, text=True, check=True).stdout.strip()
    assert version == debian  # the host's Python builds each release's venv (Debian 12's 3.11)
    assert (running / ".installed").exists() and (running / "venv" / "bin" / "gunicorn").exists()
    # Going back to the previous release needs no build: it is still installed, `current` is renamed to it.
    assert install(cluster, running.name, good) == "current"
    assert (orchestrator / "current").resolve() == running


def test_a_full_redis_answers_429_before_refusing_writes_and_loses_no_accepted_job(cluster):
    from tests.deploy.test_fabric_containers import API, api_key

    password = json.loads((cluster.secrets / "lab" / "cluster-secrets.json").read_text())["redis_password"]
    stats = ("import json, redis, sys; r = redis.Redis(host='10.231.0.11', password=sys.argv[1], ssl=True, "
             "ssl_ca_certs=sys.argv[2]); "
             "m = r.info('memory'); print(json.dumps([m['used_memory'], m['maxmemory'], r.info('errorstats')]))")
    filled = cluster.in_admin(sys.executable, "-m", "tests.deploy.fill", API, cluster.api_sha256(), "--hold", "45",
                              env={"INFERQ_API_KEY": api_key(cluster)})
    assert filled.returncode == 0, filled.stderr[-2000:]
    outcome = json.loads(filled.stdout)
    ca = str(cluster.secrets / "lab" / "cluster-ca.crt")
    used, limit, errors = json.loads(cluster.in_admin(sys.executable, "-c", stats, password, ca).stdout)
    codes = outcome["codes"]
    record("deploy redis memory", maxmemory_mib=round(limit / 2**20, 1), submitted=len(codes),
           accepted=codes.count(202), refused_429=codes.count(429), oom_errors=errors.get("errorstat_OOM", {}),
           used_mib_after=round(used / 2**20, 1))
    assert set(outcome["held"]) <= {"running", "succeeded"}, outcome["held"]
    assert set(codes) == {202, 429}, codes  # nothing but accepted and "retry later": no 5xx
    assert outcome["refusal"]["error"] == "queue_full" and "memory" in outcome["refusal"]["message"]
    assert outcome["refusal"]["retry_after"]
    # Redis never had to refuse a write: the API stopped first (no OOM error in its counters) ...
    assert "errorstat_OOM" not in errors, errors
    # ... and every job it accepted finished.
    assert outcome["finals"] == ["succeeded"] * outcome["accepted"], outcome["finals"]


def test_an_orchestrator_failing_its_smoke_job_goes_back_to_what_it_ran(cluster):
    from tests.deploy.commands import UPDATE

    orchestrator = cluster.tmp / "hosts" / "orchestrator"
    env_before = (orchestrator / "etc" / "orchestrator.env").read_text()
    proxy_before = (orchestrator / "etc" / "nginx.conf").read_text()
    running = (orchestrator / "current").resolve()
    # A configuration whose API starts but refuses every job (bodies over 16 bytes): the smoke job fails. The
    # proxy's body limit follows the API's, so its configuration changes too, and must go back with the API's.
    inventory = json.loads(cluster.inventory.read_text())
    inventory["env"]["INFERQ_MAX_BODY_BYTES"] = "16"
    cluster.inventory.write_text(json.dumps(inventory))
    try:
        failed = cluster.fab(UPDATE, check=False)
    finally:
        del inventory["env"]["INFERQ_MAX_BODY_BYTES"]
        cluster.inventory.write_text(json.dumps(inventory))
    lines = failed.stderr.strip().splitlines()
    assert failed.returncode == 1 and len(lines) == 1, failed.stderr
    assert lines[0].startswith("fab: the smoke job through https://10.231.0.11 ended refused (413") and (
        f"the orchestrator went back to release {running.name} and its previous env file and proxy configuration "
        "(a smoke job there: succeeded)") in lines[0], lines[0]
    assert "orchestrator: proxy restarted" in failed.stdout  # the failed deploy changed the proxy's configuration
    assert (f"orchestrator: api and flower back on release {running.name}; proxy back on its previous configuration"
            in failed.stdout), failed.stdout
    assert "worker-1: updated" not in failed.stdout  # it stopped before any worker host
    assert (orchestrator / "etc" / "orchestrator.env").read_text() == env_before
    assert (orchestrator / "etc" / "nginx.conf").read_text() == proxy_before
    assert (orchestrator / "current").resolve() == running
    assert json.loads(cluster.fab(SUBMIT).stdout)["status"] == "succeeded"
