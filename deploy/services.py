"""Long-running services on a host: a Service, and systemd running it (the AWS hosts).

A service is restarted only when its unit or env file changed, and started if
it is not running, so a second deploy is a no-op. Another service manager (the
tests' plain processes) takes the same Service and writes the same unit file.
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

    def state(self, c: Connection, service: Service) -> str:
        """'running (pid N)' or 'stopped'."""
        pid = root(c, f"systemctl show -p MainPID --value inferq-{service.name}", warn=True).stdout.strip()
        return f"running (pid {pid})" if pid not in ("", "0") else "stopped"

    def logs(self, c: Connection, service: Service, lines: int) -> str:
        """The service's last log lines."""
        return root(c, f"journalctl -u inferq-{service.name} -n {int(lines)} --no-pager", warn=True).stdout
