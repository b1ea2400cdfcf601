"""supervisord running the stack: start it, watch its processes over XML-RPC, restart or give up, stop it.

supervisord restarts a service that dies after its start time, at once, and
logs each exit with its cause (``exited: worker.1 (terminated by SIGKILL; not
expected)``). A death within the start time (a failed start) it hands over at
once as FATAL (startretries=0), and ``watch_services`` decides what follows
(stack/restarts.py): a service that has started since the stack did is
started again through supervisord's XML-RPC ``startProcess`` after a backoff
of 1, 2, 4 ... 30 s, for as long as it keeps dying; one that never started
(a configuration error) is tried START_RETRIES more times, then the stack
stops with one line saying which service and why.

Decision, from supervisor 4.3's source (supervisor/process.py): supervisord
cannot be configured both to never give up and to tell a configuration error
from a crash. Its own retries wait 1, 2, 3 ... s, one second more each time
and without a cap (a worker killed 100 times in a row would then wait 100 s),
and it counts them whether or not the process ever ran; a huge startretries
would also retry a taken port forever, in silence. Stopping the stack on
FATAL, as it did before, turned a worker killed four times while loading its
model into an outage of everything. So supervisord keeps what it does well
(spawning, logging each exit, restarting a crash after a long run at once,
process-group signals, the ordered stop) and the stack owns the one policy it
needs: ``startProcess`` on a FATAL process is supported (``spawn()`` accepts
FATAL) and is refused only while supervisord shuts down.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
import xmlrpc.client
from collections.abc import Callable
from pathlib import Path
from typing import cast

from supervisor.xmlrpc import Faults, SupervisorTransport

from inferq.stack.log_tail import last_line
from inferq.stack.processes import BIN
from inferq.stack.restarts import BACKOFF_MAX_SECONDS, Restarts, backoff_seconds
from inferq.stack.supervisor_config import START_RETRIES, START_SECONDS, Plan

POLL_SECONDS = 0.5
"""How often the processes' states are read: a FATAL process stays FATAL until started, so none is missed."""

LAST_LINE_CHARS = 300
"""How much of a given-up service's last log line the stack's one line quotes."""

LOG_TAIL_BYTES = 256 * 1024
"""How much of the end of supervisord's log is searched for a process's last exit, which was just written."""

FATAL, RUNNING = "FATAL", "RUNNING"
"""supervisord's states of a process that failed a start (handed to the stack), and of one that has stayed up
its start time."""


class Supervisor:
    """One supervisord process, in the foreground, with its configuration file and RPC socket."""

    def __init__(self, conf: Path, plan: Plan, env: dict[str, str]):
        self.conf, self.plan, self.env = conf, plan, env
        self.process: subprocess.Popen | None = None
        self.stopping = False

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
        self.stopping = True  # from now on the stack starts nothing again
        if self.process is not None and self.running():
            self.process.send_signal(signal.SIGTERM)

    def wait(self) -> int:
        """Wait for supervisord to exit; its exit status."""
        if self.process is None:
            raise RuntimeError("supervisord was never started: call start() first")
        return self.process.wait()

    def rpc(self) -> xmlrpc.client.ServerProxy:
        """A client of supervisord's XML-RPC interface (one per thread: a connection is not shared)."""
        transport = SupervisorTransport(self.plan.rpc_user, self.plan.rpc_password, f"unix://{self.plan.socket}")
        # The host part is ignored: the transport talks to the Unix socket.
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)

    def processes(self) -> list[dict]:
        """Every process's state, as supervisor.getAllProcessInfo gives it."""
        # XML-RPC answers are untyped on the wire; supervisor's API documents this one as a list of structs.
        return cast(list[dict], self.rpc().supervisor.getAllProcessInfo())

    def start_process(self, group: str, name: str) -> None:
        """Start a process again without waiting for it to stay up: supervisord watches it from then on."""
        self.rpc().supervisor.startProcess(f"{group}:{name}", False)


def watch_services(supervisor: Supervisor, stop: threading.Event, up: threading.Event,
                   say: Callable[[str], None], on_give_up: Callable[[str], None]) -> None:
    """Until stop is set, start again each service that failed a start, after its backoff; once one that never
    started has failed START_RETRIES + 1 times, call on_give_up with the line saying so, and return.

    up is set once the stack said it is up, which it does only when every service answered: from then on
    every service counts as started, even one that has not yet stayed up its start time.
    """
    restarts, groups, log_dir = Restarts(), {}, supervisor.plan.log_dir
    while not stop.wait(POLL_SECONDS) and not supervisor.stopping:
        try:
            infos = supervisor.processes()
        except (OSError, xmlrpc.client.Error):
            continue  # supervisord is starting, or has just exited: the main thread sees that
        now = time.monotonic()
        for info in infos:
            name, state = info["name"], info["statename"]
            groups[name] = info["group"]
            if state == RUNNING:
                restarts.running(name)
            elif state == FATAL and not restarts.pending(name):
                service = restarts.service(name)
                # The log catches a RUNNING shorter than a poll; it is read only until the stack is up.
                service.started = service.started or up.is_set() or ran_before(name, log_dir)
                wait = restarts.failed_start(name, now)
                if wait is None:
                    on_give_up(give_up_line(info, log_dir, service.failures))
                    return
                say(restart_line(name, service.failures, wait, service.started, log_dir))
        for name in restarts.due(now):
            if supervisor.stopping:
                return
            try:
                supervisor.start_process(groups[name], name)
            except xmlrpc.client.Fault as fault:
                if fault.faultCode == Faults.SHUTDOWN_STATE:
                    return
                # Anything else (ALREADY_STARTED: started by hand; NO_FILE, SPAWN_ERROR: it did not start)
                # shows at the next poll: STARTING or RUNNING, or FATAL again, one more failed start.
            except OSError:
                continue  # supervisord has just exited: the main thread sees that


def last_exit(name: str, log_dir: Path) -> str:
    """How a process last ended, from supervisord's log ("exit status 1", "terminated by SIGKILL")."""
    # The RPC interface reports no exit status for a failed start; supervisord's log line does.
    pattern = re.compile(rf"exited: {re.escape(name)} \((.+?); (?:not )?expected\)")
    causes = pattern.findall(_read(log_dir / "supervisord.log", LOG_TAIL_BYTES))
    return causes[-1] if causes else "unknown"


def ran_before(name: str, log_dir: Path) -> bool:
    """supervisord's log (its rotated part too) says the process once stayed up its start time (RUNNING)."""
    line = f"success: {name} entered RUNNING state"
    return any(line in _read(log_dir / f"supervisord.log{suffix}") for suffix in ("", ".1"))


def _read(path: Path, tail_bytes: int | None = None) -> str:
    try:
        with open(path, "rb") as f:
            if tail_bytes is not None:
                f.seek(max(0, os.path.getsize(path) - tail_bytes))
            return f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def give_up_line(info: dict, log_dir: Path, failures: int = START_RETRIES + 1) -> str:
    """The one line saying which service was given up, why, and where its log is."""
    name = info["name"]
    log = log_dir / f"{name}.log"
    cause = last_exit(name, log_dir)
    if cause == "unknown" and info.get("spawnerr"):
        cause = info["spawnerr"]  # it never ran: supervisord could not start it
    return (f"giving up: {name} died {failures} times in a row within {_start_seconds(name)}s of starting "
            f"(last: {cause}) and never started since the stack did; stopping the stack. "
            f"Its last line: {_shorten(last_line(log)) or '(none)'} [log: {log}]")


def restart_line(name: str, failures: int, wait: float, started: bool, log_dir: Path) -> str:
    """The line saying that a service failed a start, and when it is started again."""
    times = "once" if failures == 1 else f"{failures} times in a row"
    if started:
        schedule = ", ".join(f"{backoff_seconds(n):g}" for n in (1, 2, 3))
        why = f"it ran before, so it is never given up (waits {schedule} ... {BACKOFF_MAX_SECONDS:g} s)"
    else:
        why = f"try {failures + 1} of {START_RETRIES + 1}, as it has not started yet"
    return (f"{name} died {times} within {_start_seconds(name)}s of starting (last: {last_exit(name, log_dir)}); "
            f"starting it again in {wait:g}s: {why}")


def _start_seconds(name: str) -> int:
    return START_SECONDS.get(name.split(".", 1)[0], 5)


def _shorten(text: str, limit: int = LAST_LINE_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


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
