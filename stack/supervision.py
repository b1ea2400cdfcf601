"""supervisord running the stack: start it, read its processes' states over XML-RPC, stop it.

supervisord restarts a service that dies and logs each exit with its cause
(``exited: worker.1 (terminated by SIGKILL; not expected)``); what it does
not do is stop the others when it gives one up (FATAL): it would go on
serving without, say, the API. ``watch_for_give_up`` notices that and stops
the stack with one line saying which service and why.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import xmlrpc.client
from collections.abc import Callable
from pathlib import Path

from supervisor.xmlrpc import SupervisorTransport

from inferq.stack.log_tail import last_line
from inferq.stack.processes import BIN
from inferq.stack.supervisor_config import START_RETRIES, START_SECONDS, Plan

POLL_SECONDS = 0.5
"""How often the processes' states are read."""

LAST_LINE_CHARS = 300
"""How much of a given-up service's last log line the stack's one line quotes."""

FATAL = "FATAL"
"""supervisord's state of a process it gave up on after START_RETRIES failed starts."""


class Supervisor:
    """One supervisord process, in the foreground, with its configuration file and RPC socket."""

    def __init__(self, conf: Path, plan: Plan, env: dict[str, str]):
        self.conf, self.plan, self.env = conf, plan, env
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        """Start supervisord; it starts every service (Redis first)."""
        # Same process group as inferq-stack: a terminal's Ctrl-C reaches it too.
        # supervisord puts each service in a process group of its own.
        self.process = subprocess.Popen([str(BIN / "supervisord"), "-n", "-c", str(self.conf)],
                                        env=self.env, stdin=subprocess.DEVNULL)

    def running(self) -> bool:
        """supervisord has not exited."""
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """Ask supervisord to stop everything (services first, Redis last) and exit."""
        if self.running():
            self.process.send_signal(signal.SIGTERM)

    def wait(self) -> int:
        """Wait for supervisord to exit; its exit status."""
        return self.process.wait()

    def rpc(self) -> xmlrpc.client.ServerProxy:
        """A client of supervisord's XML-RPC interface (one per thread: a connection is not shared)."""
        transport = SupervisorTransport(self.plan.rpc_user, self.plan.rpc_password, f"unix://{self.plan.socket}")
        # The host part is ignored: the transport talks to the Unix socket.
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)

    def processes(self) -> list[dict]:
        """Every process's state, as supervisor.getAllProcessInfo gives it."""
        return self.rpc().supervisor.getAllProcessInfo()


def last_exit(name: str, log_dir: Path) -> str:
    """How a process last ended, from supervisord's log ("exit status 1", "terminated by SIGKILL")."""
    # The RPC interface reports no exit status for a failed start; supervisord's log line does.
    pattern = re.compile(rf"exited: {re.escape(name)} \((.+?); (?:not )?expected\)")
    try:
        causes = pattern.findall((log_dir / "supervisord.log").read_text(errors="replace"))
    except OSError:
        causes = []
    return causes[-1] if causes else "unknown"


def give_up_line(info: dict, log_dir: Path) -> str:
    """The one line saying which service was given up, why, and where its log is."""
    name = info["name"]
    log = log_dir / f"{name}.log"
    cause = last_exit(name, log_dir)
    if cause == "unknown" and info.get("spawnerr"):
        cause = info["spawnerr"]  # it never ran: supervisord could not start it
    return (f"giving up: {name} died {START_RETRIES + 1} times in a row within "
            f"{START_SECONDS.get(name.split('.', 1)[0], 5)}s of starting (last: {cause}); stopping the stack. "
            f"Its last line: {_shorten(last_line(log)) or '(none)'} [log: {log}]")


def _shorten(text: str, limit: int = LAST_LINE_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def watch_for_give_up(supervisor: Supervisor, stop: threading.Event,
                      on_give_up: Callable[[str], None]) -> None:
    """Until stop is set: when supervisord gives a service up, call on_give_up with the line saying so."""
    while not stop.wait(POLL_SECONDS):
        try:
            infos = supervisor.processes()
        except (OSError, xmlrpc.client.Error):
            continue  # supervisord is starting, or has just exited: the main thread sees that
        for info in infos:
            if info["statename"] == FATAL and not stop.is_set():
                on_give_up(give_up_line(info, supervisor.plan.log_dir))
                return


def clear_logs(log_dir: Path) -> None:
    """Remove the previous run's logs, so the stream shows this run only (the files stay until the next)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    for path in log_dir.glob("*.log*"):
        path.unlink()


def private_file(path: Path, text: str) -> Path:
    """Write text to a file only its owner can read (it holds passwords)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)  # an older file keeps its mode through O_TRUNC
    return path
