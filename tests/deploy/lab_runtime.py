"""The tests' runtime: network-namespace hosts that share this machine's filesystem and have no systemd.

The inventory of tests/deploy/test_fabric.py names it ("runtime":
"tests.deploy.lab_runtime:LabRuntime"). The orchestrator's services run as
plain supervised processes (Processes), as the AWS runtime's systemd units
would run them, from a release installed as on AWS: uploaded, in a venv of its
own built with this machine's /usr/bin/python3 (Debian 12's 3.11, as on the
orchestrator's AMI), made current only once it installs; pip takes the packages
from a local wheelhouse (pip_args), the lab having no way out. The worker hosts
run their workers the AWS way (deploy.containers): the worker image, built once
by `fab deploy` and shipped over SSH, under compose, through a `docker` command
(Debian's podman-docker) and podman-compose; each host's container store is its
own (tests/deploy/cluster.py).
"""
from __future__ import annotations

import shlex

from fabric import Connection

from inferq.deploy.connections import root
from inferq.deploy.errors import DeployError
from inferq.deploy.files import put_if_changed
from inferq.deploy.inventory import Host, Inventory
from inferq.deploy.layout import Layout
from inferq.deploy.runtime import Runtime
from inferq.deploy.services import STOP_SECONDS, Service


class Processes:
    """Services as plain background processes with pid files (hosts without systemd, as in the tests).

    The process runs the unit's command with the unit's env file, as the
    login user; its output goes to remote_dir/log/NAME.log.
    """

    def __init__(self, remote_dir: str):
        self.remote_dir = remote_dir

    def unit_path(self, service: Service) -> str:
        return f"{self.remote_dir}/units/{service.name}.service"

    def _pid(self, service: Service) -> str:
        return f"{self.remote_dir}/run/{service.name}.pid"

    def running_pid(self, c: Connection, service: Service) -> str | None:
        """The service's pid if its process is alive."""
        pid_file = self._pid(service)
        result = root(c, f"test -f {pid_file} && pid=$(cat {pid_file}) && kill -0 $pid && echo $pid", warn=True)
        return result.stdout.strip() if result.ok and result.stdout.strip() else None

    def start(self, c: Connection, service: Service) -> None:
        """Start the service's process in its own session, detached from the SSH channel."""
        log = f"{self.remote_dir}/log/{service.name}.log"
        source = f"set -a; . {shlex.quote(service.env_file)}; set +a; " if service.env_file else ""
        inner = f"{source}exec {shlex.join(service.command)}"
        root(c, f"mkdir -p {self.remote_dir}/run {self.remote_dir}/log && cd {shlex.quote(service.workdir)} && "
                f"(nohup setsid sh -c {shlex.quote(inner)} >>{log} 2>&1 </dev/null & echo $! > {self._pid(service)})")

    def stop(self, c: Connection, *services: Service) -> None:
        """SIGTERM all at once (a worker finishes its job), SIGKILL whatever lives after STOP_SECONDS."""
        running = [(s, pid) for s in services if (pid := self.running_pid(c, s))]
        if not running:
            return
        pids = " ".join(pid for _, pid in running)
        pid_files = " ".join(self._pid(s) for s, _ in running)
        # Wait until every one is gone (kill -0 with several pids fails as soon as any one is).
        alive = f"alive=; for p in {pids}; do kill -0 $p 2>/dev/null && alive=1; done; [ -z \"$alive\" ]"
        root(c, f"kill -TERM {pids}; for i in $(seq {STOP_SECONDS * 10}); do {alive} && break; sleep 0.1; done; "
                f"kill -KILL {pids} 2>/dev/null; rm -f {pid_files}", warn=True)

    def ensure(self, c: Connection, service: Service, inputs_changed: bool) -> str:
        """Write the unit; (re)start only if needed. Return 'restarted', 'started' or 'unchanged'."""
        changed = put_if_changed(c, service.unit(), self.unit_path(service)) or inputs_changed
        running = self.running_pid(c, service)
        if running and not changed:
            return "unchanged"
        self.stop(c, service)
        self.start(c, service)
        return "restarted" if running else "started"

    def restart(self, c: Connection, *services: Service) -> None:
        """Replace the services' processes (stopped together, then started)."""
        self.stop(c, *services)
        for service in services:
            self.start(c, service)

    def state(self, c: Connection, service: Service) -> str:
        """'running (pid N)' or 'stopped'."""
        pid = self.running_pid(c, service)
        return f"running (pid {pid})" if pid else "stopped"

    def logs(self, c: Connection, service: Service, lines: int) -> str:
        """The service's last log lines."""
        return root(c, f"tail -n {int(lines)} {self.remote_dir}/log/{service.name}.log", warn=True).stdout


class LabRuntime(Runtime):
    """The orchestrator's services as processes from its installed release; the worker hosts' containers as on AWS."""

    redis_server = "redis-server"
    """The process runtime finds it on PATH (the system's, or the one tests/conftest.py found)."""

    def service_manager(self, where: Layout) -> Processes:
        """Plain processes: the hosts have no systemd."""
        return Processes(where.remote_dir)

    def user(self, service: str) -> str:
        """Everything runs as the login user, root: the hosts share this machine's users."""
        return "root"

    def prepare_orchestrator(self, c: Connection, inventory: Inventory, host: Host, where: Layout) -> int:
        """The release in a venv of its own, as on AWS (redis-server and nginx are this machine's)."""
        return self.install_release(c, where)

    def prepare_data_node(self, c: Connection, inventory: Inventory, host: Host) -> int:
        """Never installs anything on this machine: redis-server (scripts/system-deps.sh) must be there."""
        if root(c, "command -v redis-server && command -v redis-cli", warn=True).failed:
            raise DeployError(f"{host.name}: no redis-server or redis-cli; run scripts/system-deps.sh")
        return 0

    def prepare_worker(self, c: Connection, inventory: Inventory, host: Host) -> int:
        """Never installs anything on this machine: scripts/container-engine.sh must have run."""
        tools = f"command -v zstd && {self.docker} version && {self.compose} version"
        if root(c, f"({tools}) >/dev/null 2>&1", warn=True).failed:
            raise DeployError(f"{host.name}: `{self.docker}` or `{self.compose}` does not run; "
                              "run scripts/container-engine.sh and `make venv`")
        return 0
