"""A worker host told it is leaving (deploy/drain.py) while clients submit: it stops its worker with SIGTERM (the
job it holds goes back to its queue), completes the lifecycle action, and no accepted job is lost or waits for a
visibility timeout.

Real parts: Redis, the API under gunicorn, two celery workers (the leaving host's and a peer's). Stand-ins: the
instance metadata service (IMDSv2's token, the instance id, the target lifecycle state) and the Auto Scaling
endpoint's CompleteLifecycleAction and RecordLifecycleActionHeartbeat, which moto does not implement; both are
local HTTP servers speaking AWS's wire formats, reached by the real requests and boto3 calls. Not the
network-namespace lab, and not the containers: the stop command here signals the worker process as
`docker compose stop` signals a container's."""
from __future__ import annotations

import re
import socket
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
import requests

from inferq import contract
from inferq.deploy import drain
from inferq.stack import processes
from inferq.stack.redis_server import RedisServer
from tests.conftest import HEARTBEAT_SECONDS, start_api, start_workers
from tests.figures import record

INSTANCE = "i-0123456789abcdef0"


class StandIn(BaseHTTPRequestHandler):
    """IMDSv2 under /latest/, the Auto Scaling query API at POST /."""

    state = "InService"
    calls: ClassVar[list[dict]] = []

    def log_message(self, *args):  # quiet
        pass

    def _send(self, code: int, body: str, kind: str = "text/plain") -> None:
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_PUT(self):
        if self.path == "/latest/api/token" and self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
            return self._send(200, "token-1")
        return self._send(400, "")

    def do_GET(self):
        if self.headers.get("X-aws-ec2-metadata-token") != "token-1":
            return self._send(401, "")  # IMDSv2 only: no token, no answer
        values = {"/latest/meta-data/instance-id": INSTANCE,
                  "/latest/meta-data/autoscaling/target-lifecycle-state": type(self).state}
        if self.path in values:
            return self._send(200, values[self.path])
        return self._send(404, "")

    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0))
        params = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
        type(self).calls.append(params)
        action = params["Action"]
        return self._send(200, f'<{action}Response xmlns="http://autoscaling.amazonaws.com/doc/2011-01-01/">'
                               f'<{action}Result/><ResponseMetadata><RequestId>r-{len(type(self).calls)}'
                               f'</RequestId></ResponseMetadata></{action}Response>', "text/xml")


@pytest.fixture()
def stand_in():
    StandIn.state, StandIn.calls = "InService", []
    server = ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.slow
def test_a_leaving_host_drains_and_completes_its_lifecycle_action(tmp_path, tiny_model, stand_in):
    import boto3

    redis_server = RedisServer(tmp_path / "redis", appendonly=False).start()
    client = redis_server.client()
    env = {"REDIS_URL": redis_server.url, "INFERQ_MODEL": str(tiny_model),
           "INFERQ_HEARTBEAT_SECONDS": HEARTBEAT_SECONDS, "INFERQ_TEST_FAULTS": "1"}
    leaving, peer = start_workers(env, ["leaving", "peer"], client, tmp_path / "workers")
    api, base = start_api(env, tmp_path / "api")
    accepted: list[str] = []
    stop_submitting = threading.Event()

    def submit() -> None:
        with requests.Session() as http:
            n = 0
            while not stop_submitting.is_set():
                # Every fourth job holds its worker 1.5 s, so the leaving worker holds one when it is told.
                text = f"{drain.__name__} job {n}" if n % 4 else "inferq-test-sleep:1.5"
                answer = http.post(base + "/jobs", json={"text": text}, timeout=10)
                assert answer.status_code == 202, answer.text
                accepted.append(answer.json()["job_id"])
                n += 1
                time.sleep(0.05)

    submitter = threading.Thread(target=submit)
    try:
        submitter.start()
        time.sleep(2.0)
        autoscaling = boto3.client("autoscaling", region_name="us-east-1", endpoint_url=stand_in,
                                   aws_access_key_id="testing", aws_secret_access_key="testing")

        def stop() -> int:  # what `docker compose stop` does to a container: SIGTERM, wait, SIGKILL only late
            processes.stop(leaving, timeout=60)
            return leaving.returncode

        # Told to leave while its worker holds a job (its holding set has more than the placeholder).
        holding = contract.HOLDING_KEY.format(f"leaving@{socket.gethostname()}")
        processes.wait_until(lambda: client.scard(holding) > 1, 20, "the leaving worker holding a job", leaving,
                             tmp_path / "workers" / "leaving.log")
        StandIn.state = drain.LEAVING
        lines: list[str] = []
        result = drain.watch(drain.Metadata(stand_in), autoscaling, "inferq-workers", "inferq-drain", stop,
                             poll_seconds=0.2, heartbeat_seconds=0.5, report=lines.append,
                             deadline=time.monotonic() + 60)
        time.sleep(1.0)  # clients go on submitting after the host left
        stop_submitting.set()
        submitter.join(timeout=30)
        assert result is not None, lines
        assert leaving.returncode == 0  # a warm shutdown: it gave back what it held and left
        log = (tmp_path / "workers" / "leaving.log").read_text()
        gave_back = re.findall(r"gave back (\d+) job\(s\) to the queue", log)
        assert gave_back and int(gave_back[-1]) >= 1
        completed = [c for c in StandIn.calls if c["Action"] == "CompleteLifecycleAction"]
        assert completed == [{"Action": "CompleteLifecycleAction", "Version": "2011-01-01",
                              "AutoScalingGroupName": "inferq-workers", "LifecycleHookName": "inferq-drain",
                              "InstanceId": INSTANCE, "LifecycleActionResult": "CONTINUE"}]
        # Every accepted job ends succeeded, on the peer once the host left, long before a visibility timeout
        # (300 s) could have given a job back.
        waited_from = time.monotonic()
        states = {}
        with requests.Session() as http:
            for job_id in accepted:
                states[job_id] = http.get(f"{base}/jobs/{job_id}?wait=20", timeout=30).json()
        settle_s = time.monotonic() - waited_from
        lost = [j for j, s in states.items() if s["status"] != "succeeded"]
        by_leaving = sum(1 for s in states.values() if s.get("worker", {}).get("hostname", "").startswith("leaving@"))
        record("autoscale drain", drain_s=result["drain_s"], accepted=len(accepted), lost=len(lost),
               given_back=int(gave_back[-1]), done_by_leaving_host=by_leaving, settle_s=settle_s)
        assert lost == [], {j: states[j]["status"] for j in lost}
        assert settle_s < 60
    finally:
        stop_submitting.set()
        submitter.join(timeout=30)
        for process in (api, peer, leaving):
            processes.stop(process)
        redis_server.stop()
