"""On a worker host of the Auto Scaling group: leave without losing a job (issue 22, item 4).

``python -m inferq.deploy.drain --group <cluster>-workers --hook <cluster>-drain`` runs on
the host beside its containers. It polls the instance metadata service (IMDSv2: a
session token first) for ``autoscaling/target-lifecycle-state``; when the group has
chosen this host to leave, that reads ``Terminated`` while the termination hook holds
the instance in ``Terminating:Wait``. Then:

1. the stop command (default: ``docker compose ... stop``) sends the containers
   SIGTERM: each worker stops taking work and gives back what it holds, to the head of
   its queue (kombu's restore on a warm shutdown, inferq's take: broker/transport.py),
   so a peer takes it at once, not after a visibility timeout; a job's pass in flight
   finishes or is given back;
2. it completes the lifecycle action (``CONTINUE``), and AWS terminates the instance.
   While the stop command runs it records a heartbeat every ``--heartbeat`` seconds,
   so a long stop is not cut short by the hook's timeout.

The role the host runs under may do exactly this (deploy/autoscaling.py, LeaveTheGroup).
Nothing here is started on the hosts yet: the boot script that would run it is issue
22's item 2 (docs/deploy.md).
"""
from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import requests

IMDS = "http://169.254.169.254"
LEAVING = "Terminated"
"""The target lifecycle state of an instance the group is taking out (AWS: "Terminated")."""

STOP_COMMAND = "docker compose --project-directory /opt/inferq stop --timeout 600"
"""SIGTERM to both containers; SIGKILL only after 600 s (a pass longer than that is given back anyway)."""


class Metadata:
    """The instance metadata service, IMDSv2: a session token on every request."""

    def __init__(self, base: str = IMDS, timeout: float = 2.0):
        self.base, self.timeout, self._token, self._token_at = base.rstrip("/"), timeout, "", 0.0

    def _headers(self) -> dict[str, str]:
        if not self._token or time.monotonic() - self._token_at > 300:
            answer = requests.put(f"{self.base}/latest/api/token", timeout=self.timeout,
                                  headers={"X-aws-ec2-metadata-token-ttl-seconds": "600"})
            answer.raise_for_status()
            self._token, self._token_at = answer.text, time.monotonic()
        return {"X-aws-ec2-metadata-token": self._token}

    def get(self, path: str) -> str | None:
        """A metadata value, None where the service has none (404)."""
        answer = requests.get(f"{self.base}/latest/meta-data/{path}", headers=self._headers(), timeout=self.timeout)
        if answer.status_code == 404:
            return None
        answer.raise_for_status()
        return answer.text.strip()


def leave(autoscaling: Any, group: str, hook: str, instance_id: str, stop: Callable[[], int],
          heartbeat_seconds: float, report: Callable[[str], None]) -> dict[str, float]:
    """Stop the containers (heartbeats while it runs), then complete the lifecycle action. Times taken."""
    started = time.monotonic()
    report(f"{instance_id} is leaving {group}: stopping the workers (SIGTERM: they give their jobs back)")
    import threading

    done = threading.Event()

    def beat() -> None:
        while not done.wait(heartbeat_seconds):
            autoscaling.record_lifecycle_action_heartbeat(AutoScalingGroupName=group, LifecycleHookName=hook,
                                                          InstanceId=instance_id)

    beater = threading.Thread(target=beat, daemon=True)
    beater.start()
    try:
        code = stop()
    finally:
        done.set()
        beater.join()
    stopped = time.monotonic()
    report(f"workers stopped (exit {code}) in {stopped - started:.1f}s; completing the lifecycle action")
    # CONTINUE either way: the jobs a worker could not give back come back to a peer after their lease
    # (broker/holdings.py); holding the host longer would not bring them back sooner.
    autoscaling.complete_lifecycle_action(AutoScalingGroupName=group, LifecycleHookName=hook,
                                          InstanceId=instance_id, LifecycleActionResult="CONTINUE")
    return {"stop_s": stopped - started, "drain_s": time.monotonic() - started, "exit": float(code)}


def watch(metadata: Metadata, autoscaling: Any, group: str, hook: str, stop: Callable[[], int],
          poll_seconds: float = 5.0, heartbeat_seconds: float = 60.0,
          report: Callable[[str], None] = print, deadline: float | None = None) -> dict[str, float] | None:
    """Poll the target lifecycle state until the host is leaving, then leave(); None if deadline passed first."""
    instance_id = None
    while deadline is None or time.monotonic() < deadline:
        try:
            instance_id = instance_id or metadata.get("instance-id")
            state = metadata.get("autoscaling/target-lifecycle-state")
        except requests.RequestException as exc:
            report(f"instance metadata did not answer ({type(exc).__name__}); asking again")
            state = None
        if state == LEAVING and instance_id:
            return leave(autoscaling, group, hook, instance_id, stop, heartbeat_seconds, report)
        time.sleep(poll_seconds)
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m inferq.deploy.drain", description=__doc__.split("\n")[0])
    p.add_argument("--group", required=True)
    p.add_argument("--hook", required=True)
    p.add_argument("--region", default=None)
    p.add_argument("--imds", default=IMDS, help="the metadata service (default %(default)s)")
    p.add_argument("--stop-command", default=STOP_COMMAND, help="what stops the workers (default: %(default)s)")
    p.add_argument("--poll", type=float, default=5.0, help="seconds between looks at the lifecycle state")
    p.add_argument("--heartbeat", type=float, default=60.0, help="seconds between lifecycle heartbeats")
    args = p.parse_args(argv)
    import boto3

    autoscaling = boto3.client("autoscaling", region_name=args.region)

    def stop() -> int:
        return subprocess.run(shlex.split(args.stop_command), check=False).returncode

    def report(line: str) -> None:
        print(f"inferq-drain: {line}", flush=True)

    result = watch(Metadata(args.imds), autoscaling, args.group, args.hook, stop, args.poll, args.heartbeat, report)
    if result is not None:
        report(f"left: drain_s={result['drain_s']:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
