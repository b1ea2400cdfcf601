"""A worker host of the Auto Scaling group in the network-namespace lab (issue 22): it joins with only the boot
script and the store, takes jobs, and leaves without losing one when told.

Runs after test_fabric*.py on the same deployed cluster (tests/deploy/cluster.py): its orchestrator's Redis
and API are the ones the new host joins. The new host ("joiner") is a namespace of its own on the lab's
network (10.231.0.14), with a container store of its own and no sshd: nothing logs in to it, no `fab` runs
against it. Around it:

- the store: a moto server in the admin namespace on the lab's address 10.231.0.10 (the lab's "AWS"),
  filled from the admin namespace as `fab deploy` fills it for a group (deploy/image_store.py: the bucket,
  the image saved by digest, worker.env's values as SecureString parameters, the image and compose
  parameters), the image being the one the cluster's first `fab deploy` built;
- the instance metadata service: tests/deploy/aws_stand_in.py in the joiner's namespace on
  169.254.169.254:80, where a host finds it (IMDSv2; the instance id; the target lifecycle state);
- Auto Scaling's CompleteLifecycleAction and RecordLifecycleActionHeartbeat (moto has neither): the same
  stand-in on 10.231.0.10, beside moto.

The joiner runs deploy/boot.py as the user data does (the file itself, with the standard library and
boto3), then deploy/drain.py's watcher as the inferq-drain unit does; both reach only lab addresses.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from inferq.deploy import autoscaling
from inferq.stack import processes
from inferq.stack.redis_server import free_port
from tests.deploy.aws_stand_in import calls
from tests.deploy.cluster import container_store
from tests.deploy.conftest import BIN, ROOT
from tests.deploy.netns import ADMIN_ADDRESS
from tests.deploy.test_fabric_containers import jobs, outcomes
from tests.figures import record
from tests.worker_image import engine

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

JOINER = "joiner"
INSTANCE = "i-0a1b2c3d4e5f60718"
IMDS_ADDRESS = "169.254.169.254"
REGION = "us-east-1"
NAMES = autoscaling.Names("lab")
BUCKET = NAMES.bucket("123456789012", REGION)
NODES = [f"worker@{INSTANCE}-w{i}" for i in (1, 2)]
"""The Celery names of the joined host's two workers: the image's worker@%h, the host name its instance id."""

PUBLISH = """
import dataclasses, sys
import boto3
from inferq.deploy import credentials, image_store, inventory, tls
from inferq.deploy.image import Image
cluster = inventory.read(sys.argv[1])
cluster = dataclasses.replace(cluster, autoscaling={"group": sys.argv[3], "hook": sys.argv[4], "bucket": sys.argv[5],
                                                    "region": sys.argv[6]})
secrets = credentials.load_or_create(sys.argv[2], cluster.cluster)
s3 = boto3.client("s3", region_name=sys.argv[6])
image_store.ensure_bucket(s3, sys.argv[5], sys.argv[6], cluster.cluster)
s3.delete_bucket_policy(Bucket=sys.argv[5])  # TLS only; moto's endpoint here is plain HTTP
image_store.publish(cluster, secrets, sys.argv[7], Image(sys.argv[8], sys.argv[9]), open(sys.argv[10]).read(), print,
                    tls.load_or_create_ca(sys.argv[2], cluster.cluster).cert_pem.decode())
"""
"""What `fab deploy` does for a group (deploy/operations.py publish_for_group), from the operator's machine."""

PROBE = """
import json, sys, time
import redis
from inferq import contract
from inferq.deploy import config_files, credentials, inventory, tls
cluster = inventory.read(sys.argv[1])
secrets = credentials.load_or_create(sys.argv[2], cluster.cluster)
client = redis.Redis.from_url(config_files.redis_url(cluster, secrets, "worker"),
                              ssl_ca_certs=str(tls.ca_paths(sys.argv[2], cluster.cluster)[0]))
what, nodes, deadline = sys.argv[3], sys.argv[4].split(","), time.monotonic() + float(sys.argv[5])
while time.monotonic() < deadline:
    if what == "online":
        scores = [client.zscore(contract.WORKERS_KEY, node) for node in nodes]
        done = all(s is not None and s > time.time() - 5 for s in scores)
    else:  # holding: a worker holds a delivery (its set has more than the placeholder)
        done = any(client.scard(contract.HOLDING_KEY.format(node)) > 1 for node in nodes)
    if done:
        print(json.dumps({"ok": True}))
        sys.exit(0)
    time.sleep(0.2)
print(json.dumps({"ok": False}))
"""
"""Waits, from the admin namespace, on the orchestrator's Redis: the nodes online (a fresh heartbeat), or one
holding a job."""


@dataclass
class Joiner:
    tmp: Path
    namespace: str
    env: dict[str, str]
    aws_env: dict[str, str]
    project: Path
    state_file: Path
    calls_file: Path
    processes: list[subprocess.Popen] = field(default_factory=list)
    boot: subprocess.CompletedProcess | None = None
    boot_s: float = 0.0
    join_s: float = 0.0
    drain: subprocess.Popen | None = None


def aws_env(endpoint: str) -> dict[str, str]:
    """boto3 to the lab's moto, never to AWS (the lab's namespaces have no way out anyway)."""
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION, "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}


def probe(cluster, what: str, timeout: float) -> bool:
    done = cluster.in_admin(sys.executable, "-c", PROBE, str(cluster.inventory), str(cluster.secrets), what,
                            ",".join(NODES), str(timeout), env={"PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-1500:]
    return json.loads(done.stdout)["ok"]


def spawn_in(cluster, namespace: str, command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return processes.spawn([*cluster.lab.exec_prefix(namespace), *command],
                           {**env, "PYTHONPATH": str(ROOT)}, log)


def wait_http(cluster, url: str, process: subprocess.Popen, log: Path) -> None:
    """Until url answers from the admin namespace (any status)."""
    script = ("import sys, time, requests\nfor _ in range(150):\n    try:\n        requests.get(sys.argv[1], timeout=1)"
              "\n        sys.exit(0)\n    except requests.RequestException:\n        time.sleep(0.2)\nsys.exit(1)")
    done = cluster.in_admin(sys.executable, "-c", script, url)
    assert done.returncode == 0 and process.poll() is None, log.read_text()[-1500:]


def container_logs(cluster) -> str:
    out = []
    for name in cluster.on_container_host("podman", "ps", "-aq", "--filter", "label=com.docker.compose.project=inferq",
                                          host=JOINER).stdout.split():
        done = cluster.on_container_host("podman", "logs", name, check=False, host=JOINER)
        out.append(done.stdout + done.stderr)
    return "\n".join(out)


@pytest.fixture(scope="module")
def joiner(cluster, tmp_path_factory):
    """The joiner host, the store filled as `fab deploy` fills it for a group, the stand-ins; nothing on the host."""
    tmp = tmp_path_factory.mktemp("joiner")
    store = tmp / "containers"
    env = container_store(store)
    host = cluster.lab.add_host(JOINER, env)
    made = Joiner(tmp, host.namespace, env, {}, tmp / "opt-inferq", tmp / "lifecycle-state",
                  tmp / "autoscaling-calls.jsonl")
    try:
        subprocess.run([*cluster.lab.exec_prefix(host.namespace), "ip", "addr", "add", f"{IMDS_ADDRESS}/32", "dev",
                        "lo"], check=True, capture_output=True)
        moto_port, autoscaling_port = free_port(), free_port()
        moto_url = f"http://{ADMIN_ADDRESS}:{moto_port}"
        moto = spawn_in(cluster, cluster.lab.admin, [str(BIN / "moto_server"), "-H", ADMIN_ADDRESS, "-p",
                                                     str(moto_port)], {}, tmp / "moto.log")
        made.processes.append(moto)
        stand_in = [sys.executable, "-m", "tests.deploy.aws_stand_in", "--instance-id", INSTANCE,
                    "--state-file", str(made.state_file), "--calls-file", str(made.calls_file)]
        as_log = tmp / "autoscaling-stand-in.log"
        made.processes.append(spawn_in(cluster, cluster.lab.admin, [*stand_in, "--address", ADMIN_ADDRESS, "--port",
                                                                    str(autoscaling_port)], {}, as_log))
        imds_log = tmp / "imds.log"
        made.processes.append(spawn_in(cluster, host.namespace, [*stand_in, "--address", IMDS_ADDRESS, "--port",
                                                                 "80"], {}, imds_log))
        wait_http(cluster, moto_url + "/moto-api/", moto, tmp / "moto.log")
        wait_http(cluster, f"http://{ADMIN_ADDRESS}:{autoscaling_port}/", made.processes[1], as_log)
        made.aws_env = {**aws_env(moto_url), "AWS_ENDPOINT_URL_AUTO_SCALING": f"http://{ADMIN_ADDRESS}:{autoscaling_port}"}
        # The image the cluster's first deploy built, saved as `fab deploy` saves it (docker save | zstd).
        found = re.search(r"(?:built|image) (inferq-worker:[0-9a-f]{12}) \(([0-9a-f]{12})\)", cluster.first.stdout)
        assert found, cluster.first.stdout
        tag = f"localhost/{found.group(1)}"
        image_id = engine.podman("image", "inspect", "--format", "{{.Id}}", tag).stdout.strip()
        archive = tmp / "image.tar.zst"
        with open(archive, "wb") as out:
            save = subprocess.Popen([engine.DOCKER, "save", tag], stdout=subprocess.PIPE)
            subprocess.run(["zstd", "-q", "-T0", "-c"], stdin=save.stdout, stdout=out, check=True)
            assert save.wait() == 0
        published = cluster.in_admin(sys.executable, "-c", PUBLISH, str(cluster.inventory), str(cluster.secrets),
                                     NAMES.group, NAMES.hook, BUCKET, REGION, str(archive), tag, image_id,
                                     str(ROOT / "docker-compose.yml"), env={**made.aws_env, "PYTHONPATH": str(ROOT)})
        assert published.returncode == 0, published.stderr[-2000:]
        archive.unlink()
        yield made
    finally:
        for process in reversed(made.processes):
            processes.stop(process)
        if made.drain is not None:
            processes.stop(made.drain)
        cluster.on_container_host("podman", "rm", "-af", "-t", "5", check=False, host=JOINER)
        cluster.on_container_host("podman", "pod", "rm", "-af", check=False, host=JOINER)
        cluster.on_container_host("podman", "rmi", "-af", check=False, host=JOINER)
        shutil.rmtree(store, ignore_errors=True)


def test_a_host_with_only_the_boot_script_joins_and_takes_jobs(cluster, joiner):
    # What the user data runs at first boot (deploy/autoscaling.py boot_command), with this lab's engine:
    # the file itself, not the package; its host name from the metadata service.
    boot = [sys.executable, str(ROOT / "deploy" / "boot.py"), "--cluster", "lab", "--bucket", BUCKET,
            "--region", REGION, "--dir", str(joiner.project), "--engine", engine.DOCKER,
            "--compose", str(BIN / "podman-compose"), "--wait", "60"]
    started = time.monotonic()
    joiner.boot = subprocess.run([*cluster.lab.on_host(JOINER), *(f"{k}={v}" for k, v in joiner.aws_env.items()),
                                  *boot], capture_output=True, text=True, timeout=300, cwd="/")
    joiner.boot_s = time.monotonic() - started
    assert joiner.boot.returncode == 0, joiner.boot.stdout[-1500:] + joiner.boot.stderr[-1500:]
    assert probe(cluster, "online", 120), container_logs(cluster)[-3000:]
    joiner.join_s = time.monotonic() - started
    # The drain watcher starts at boot beside the containers, as the inferq-drain unit does.
    compose_stop = f"cd {joiner.project} && exec {BIN / 'podman-compose'} stop -t 60"
    stop = f"sh -c {shlex.quote(compose_stop)}"
    joiner.drain = spawn_in(cluster, joiner.namespace,
                            [sys.executable, "-m", "inferq.deploy.drain", "--group", NAMES.group, "--hook",
                             NAMES.hook, "--region", REGION, "--imds", f"http://{IMDS_ADDRESS}", "--stop-command",
                             stop, "--poll", "0.5", "--heartbeat", "1"],
                            {**joiner.env, **joiner.aws_env}, joiner.tmp / "drain.log")
    out = joiner.boot.stdout
    assert "SHA-256 checked" in out and f"started the workers of {INSTANCE}" in out, out
    worker_env = joiner.project / "worker.env"
    assert worker_env.stat().st_mode & 0o777 == 0o600 and worker_env.stat().st_uid == 10001
    assert not (joiner.project / "image.tar.zst").exists()
    # Jobs go to whichever worker asks first: a round that the fixed hosts' warm workers took whole says nothing
    # of the new host, so another round follows (at most three).
    done: list[dict] = []
    for _ in range(3):
        done += outcomes(jobs(cluster, "--count", "36", "--hold", "0.5"))
        if any(o["worker"] in NODES for o in done):
            break
    succeeded = sum(o["status"] == "succeeded" for o in done)
    on_joined = sum(o["worker"] in NODES for o in done)
    record("autoscale join", join_s=joiner.join_s, boot_s=joiner.boot_s, jobs=len(done), succeeded=succeeded,
           on_joined_host=on_joined)
    assert succeeded == len(done), done
    assert on_joined > 0, done


def test_a_host_told_it_is_leaving_drains_under_load_and_completes_its_lifecycle_action(cluster, joiner, tmp_path):
    if joiner.drain is None:
        pytest.skip("the host did not join")
    stop_file = tmp_path / "stop"
    loads = [jobs(cluster, "--until", str(stop_file), "--hold", "1.0") for _ in range(4)]
    try:
        # Told to leave while one of its workers holds a job.
        assert probe(cluster, "holding", 60), "no job reached the joined host"
        joiner.state_file.write_text("Terminated")
        told = time.monotonic()
        joiner.drain.wait(timeout=120)
        left_s = time.monotonic() - told
        time.sleep(3.0)  # clients go on submitting after the host left
    finally:
        stop_file.touch()
    stopped = time.monotonic()
    accepted = [o for load in loads for o in outcomes(load)]
    # Every client had its last answer within seconds: no job waited for the visibility timeout (300 s).
    settle_s = time.monotonic() - stopped
    drain_log = (joiner.tmp / "drain.log").read_text()
    assert joiner.drain.returncode == 0, drain_log[-2000:]
    drained = re.search(r"left: drain_s=([0-9.]+)", drain_log)
    assert drained, drain_log[-2000:]
    completed = [c for c in calls(joiner.calls_file) if c["Action"] == "CompleteLifecycleAction"]
    assert completed == [{"Action": "CompleteLifecycleAction", "Version": "2011-01-01",
                          "AutoScalingGroupName": NAMES.group, "LifecycleHookName": NAMES.hook,
                          "InstanceId": INSTANCE, "LifecycleActionResult": "CONTINUE"}], calls(joiner.calls_file)
    # While compose stopped the containers, the watcher kept the hook from timing out (a heartbeat a second here).
    beats = [c for c in calls(joiner.calls_file) if c["Action"] == "RecordLifecycleActionHeartbeat"]
    assert all(c["InstanceId"] == INSTANCE and c["AutoScalingGroupName"] == NAMES.group for c in beats), beats
    states = {c["state"] for c in cluster.containers(JOINER).values()}
    assert states == {"exited"}, states
    logs = container_logs(cluster)
    (joiner.tmp / "containers.log").write_text(logs)
    # A worker told SIGTERM while it runs a job gives it back to the head of its queue (tasks/ and broker/).
    in_flight = re.findall(r"SIGTERM with job\(s\) (.+) in flight: giving them back", logs)
    gave_back = sum(len(ids.split(", ")) for ids in in_flight)
    gave_back += sum(int(n) for n in re.findall(r"gave back (\d+) job\(s\) to the queue", logs))
    lost = [o for o in accepted if o["status"] != "succeeded"]
    by_joined = sum(o["worker"] in NODES for o in accepted)
    record("autoscale drain", drain_s=float(drained.group(1)), told_to_left_s=left_s, accepted=len(accepted),
           lost=len(lost), given_back=gave_back, done_by_leaving_host=by_joined, heartbeats=len(beats),
           settle_s=settle_s)
    assert lost == [], lost
    assert settle_s < 60
    # The job it held when told was finished there (a warm shutdown ends the pass in flight) or given back.
    assert accepted and gave_back + by_joined >= 1, logs[-3000:]
