"""Stand-ins for the two AWS endpoints moto 5.2.5 lacks and a leaving host talks to, as plain HTTP servers.

- The instance metadata service, IMDSv2 (a session token from ``PUT /latest/api/token``, then
  ``GET /latest/meta-data/instance-id`` and ``.../autoscaling/target-lifecycle-state``);
  the state is the content of ``--state-file`` at each request (``InService`` while it
  is missing), so a test tells the host it is leaving by writing ``Terminated`` there.
- Auto Scaling's query API at ``POST /``: ``CompleteLifecycleAction`` and
  ``RecordLifecycleActionHeartbeat``, and the instance refresh calls ``StartInstanceRefresh``,
  ``DescribeInstanceRefreshes`` and ``CancelInstanceRefresh`` (moto 5.2.5 implements none of
  them: its server answers 500), each call appended to ``--calls-file`` as one JSON line,
  answered in AWS's XML; with ``--upstream`` (moto's URL) every other call goes there, so
  a client sees one Auto Scaling endpoint: moto's groups plus these calls. A refresh stays
  ``InProgress`` until cancelled (``Cancelled`` at once; AWS passes through ``Cancelling``),
  and a second start while one is in progress is refused with AWS's
  ``InstanceRefreshInProgress``.

In the network-namespace lab (tests/deploy/test_lab_autoscale.py) the metadata service
runs in the worker host's namespace on 169.254.169.254:80, where a host finds it, and the
Auto Scaling endpoint beside moto on the lab's "AWS" address; the real boto3 and requests
calls of deploy/boot.py and deploy/drain.py reach them.

    python -m tests.deploy.aws_stand_in --address 169.254.169.254 --port 80 --instance-id i-0... \
        --state-file STATE --calls-file CALLS
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

TOKEN = "token-1"


LIFECYCLE = ("CompleteLifecycleAction", "RecordLifecycleActionHeartbeat")
REFRESH = ("StartInstanceRefresh", "DescribeInstanceRefreshes", "CancelInstanceRefresh")
XMLNS = "http://autoscaling.amazonaws.com/doc/2011-01-01/"


def _refresh_xml(refresh: dict) -> str:
    prefs = "".join(f"<{k}>{str(v).lower() if isinstance(v, bool) else v}</{k}>"
                    for k, v in refresh["Preferences"].items())
    fields = "".join(f"<{k}>{refresh[k]}</{k}>" for k in ("InstanceRefreshId", "AutoScalingGroupName", "Status",
                                                          "PercentageComplete", "InstancesToUpdate"))
    return f"<member>{fields}<Preferences>{prefs}</Preferences></member>"


def handler(instance_id: str, state_file: Path | None, calls_file: Path | None,
            upstream: str | None = None) -> type[BaseHTTPRequestHandler]:
    """A request handler class answering for this instance, its state and its recorded calls."""
    refreshes: list[dict] = []
    lock = threading.Lock()

    class StandIn(BaseHTTPRequestHandler):
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
                return self._send(200, TOKEN)
            return self._send(400, "")

        def do_GET(self):
            if self.headers.get("X-aws-ec2-metadata-token") != TOKEN:
                return self._send(401, "")  # IMDSv2 only: no token, no answer
            state = state_file.read_text().strip() if state_file and state_file.exists() else "InService"
            values = {"/latest/meta-data/instance-id": instance_id,
                      "/latest/meta-data/autoscaling/target-lifecycle-state": state}
            if self.path in values:
                return self._send(200, values[self.path])
            return self._send(404, "")

        def _error(self, code: str, message: str) -> None:
            self._send(400, f'<ErrorResponse xmlns="{XMLNS}"><Error><Type>Sender</Type><Code>{code}</Code>'
                            f"<Message>{message}</Message></Error><RequestId>r-1</RequestId></ErrorResponse>",
                       "text/xml")

        def _answer(self, action: str, result: str = "") -> None:
            self._send(200, f'<{action}Response xmlns="{XMLNS}"><{action}Result>{result}</{action}Result>'
                            f"<ResponseMetadata><RequestId>r-1</RequestId></ResponseMetadata></{action}Response>",
                       "text/xml")

        def _forward(self, body: bytes) -> None:
            import requests

            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
            answer = requests.post(upstream + self.path, data=body, headers=headers, timeout=30)
            self._send(answer.status_code, answer.text, answer.headers.get("Content-Type", "text/xml"))

        def _instances(self, group: str) -> int:
            """How many instances the upstream's group has (what a refresh has to replace); 0 without upstream."""
            if not upstream:
                return 0
            import requests

            answer = requests.post(upstream + "/", timeout=30, data={
                "Action": "DescribeAutoScalingGroups", "Version": "2011-01-01",
                "AutoScalingGroupNames.member.1": group},
                # moto picks the service by the signature's scope (it checks no signature by default).
                headers={"Authorization": self.headers.get("Authorization", "")})
            return answer.text.count("<InstanceId>")

        def _refresh(self, action: str, params: dict[str, str]) -> None:
            group = params.get("AutoScalingGroupName", "")
            with lock:
                active = [r for r in refreshes if r["AutoScalingGroupName"] == group and r["Status"] == "InProgress"]
                if action == "StartInstanceRefresh":
                    if active:
                        return self._error("InstanceRefreshInProgress", f"An Instance Refresh is already in "
                                                                        f"progress for {group}.")
                    prefs = {k.split(".", 1)[1]: v for k, v in params.items() if k.startswith("Preferences.")}
                    refreshes.append({"InstanceRefreshId": str(uuid.uuid4()), "AutoScalingGroupName": group,
                                      "Status": "InProgress", "PercentageComplete": 0,
                                      "InstancesToUpdate": self._instances(group),
                                      "Preferences": prefs})
                    return self._answer(action, f"<InstanceRefreshId>{refreshes[-1]['InstanceRefreshId']}"
                                                "</InstanceRefreshId>")
                if action == "CancelInstanceRefresh":
                    if not active:
                        return self._error("ActiveInstanceRefreshNotFound", f"No in progress or pending Instance "
                                                                            f"Refresh found for {group}.")
                    active[0]["Status"] = "Cancelled"
                    return self._answer(action, f"<InstanceRefreshId>{active[0]['InstanceRefreshId']}"
                                                "</InstanceRefreshId>")
                latest = [r for r in reversed(refreshes) if r["AutoScalingGroupName"] == group]
                return self._answer(action, "<InstanceRefreshes>" + "".join(map(_refresh_xml, latest))
                                    + "</InstanceRefreshes>")

        def do_POST(self):
            length = int(self.headers.get("Content-Length", 0))
            body = self.rfile.read(length)
            params = dict(urllib.parse.parse_qsl(body.decode()))
            action = params.get("Action", "Unknown")
            if action not in LIFECYCLE + REFRESH:
                if upstream:
                    return self._forward(body)
                return self._error("InvalidAction", action)
            if calls_file:
                with open(calls_file, "a") as f:
                    f.write(json.dumps(params) + "\n")
            if action in REFRESH:
                return self._refresh(action, params)
            return self._answer(action)

    return StandIn


def calls(calls_file: Path) -> list[dict]:
    """The Auto Scaling calls recorded so far."""
    if not calls_file.exists():
        return []
    return [json.loads(line) for line in calls_file.read_text().splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.deploy.aws_stand_in")
    p.add_argument("--address", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--instance-id", default="i-0123456789abcdef0")
    p.add_argument("--state-file", type=Path)
    p.add_argument("--calls-file", type=Path)
    p.add_argument("--upstream", help="where the other Auto Scaling calls go (moto's URL)")
    args = p.parse_args(argv)
    server = ThreadingHTTPServer((args.address, args.port), handler(args.instance_id, args.state_file,
                                                                     args.calls_file, args.upstream))
    print(f"serving on {args.address}:{args.port}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
