"""Long-running services on a host: systemd units on AWS, or plain supervised processes.

Both runtimes take the same Service (command, env file, user, directory) and
write the same unit file; a service is restarted only when its unit or env
file changed, and started if it is not running, so a second deploy is a no-op.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass

from fabric import Connection

from inferq.deploy.connections import root
from inferq.deploy.files import put_if_changed

STOP_SECONDS = 60
"""How long a stopping service may take (a worker finishing its job) before it is killed."""


@dataclass(frozen=True)
class Service:
    """One long-running process of a host."""

    name: str
    command: list[str]
    env_file: str  # "" for none
    workdir: str
    user: str = "root"

    def unit(self) -> str:
        """The systemd unit that runs this service."""
        return "\n".join([
            "[Unit]", f"Description=inferq {self.name}", "After=network-online.target", "Wants=network-online.target",
            "", "[Service]", f"User={self.user}", *([f"EnvironmentFile={self.env_file}"] if self.env_file else []),
            f"WorkingDirectory={self.workdir}", f"ExecStart={shlex.join(self.command)}",
            "Restart=always", "RestartSec=2", f"TimeoutStopSec={STOP_SECONDS}",
            "", "[Install]", "WantedBy=multi-user.target", "",
        ])


class Systemd:
    """Services as systemd units (the AWS hosts)."""

    def __init__(self, remote_dir: str):
        self.remote_dir = remote_dir

    def unit_path(self, service: Service) -> str:
        return f"/etc/systemd/system/inferq-{service.name}.service"

    def ensure(self, c: Connection, service: Service, inputs_changed: bool) -> str:
        """Install the unit; (re)start only if needed. Return 'restarted', 'started' or 'unchanged'."""
        changed = put_if_changed(c, service.unit(), self.unit_path(service)) or inputs_changed
        unit = f"inferq-{service.name}"
        if changed:
            root(c, f"systemctl daemon-reload && systemctl enable {unit} && systemctl restart {unit}")
            return "restarted"
        if root(c, f"systemctl is-active --quiet {unit}", warn=True).failed:
            root(c, f"systemctl enable {unit} && systemctl start {unit}")
            return "started"
        return "unchanged"

    def restart(self, c: Connection, *services: Service) -> None:
        """Restart services together (each process is replaced)."""
        root(c, "systemctl restart " + " ".join(f"inferq-{s.name}" for s in services))

    def state(self, c: Connection, service: Service) -> str:
        """'running (pid N)' or 'stopped'."""
        pid = root(c, f"systemctl show -p MainPID --value inferq-{service.name}", warn=True).stdout.strip()
        return f"running (pid {pid})" if pid not in ("", "0") else "stopped"

    def logs(self, c: Connection, service: Service, lines: int) -> str:
        """The service's last log lines."""
        return root(c, f"journalctl -u inferq-{service.name} -n {int(lines)} --no-pager", warn=True).stdout


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


def manager(runtime: str, remote_dir: str):
    """The service manager of a runtime: systemd for 'docker' (AWS), processes for 'process'."""
    return Systemd(remote_dir) if runtime == "docker" else Processes(remote_dir)
