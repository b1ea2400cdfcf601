"""The local stack as a supervisord configuration: one program per service, and how each is kept alive.

commands.py says what each service runs; this module says how supervisord supervises it:
a service that exits after its start time (START_SECONDS) is restarted at
once; one that dies within it (a failed start) is handed to the stack at once
(supervisord's startretries is 0, so it enters FATAL), which restarts it with
a growing backoff, or stops the stack if it never started
(stack/restarts.py, stack/supervision.py). Stopping goes by group: the
services first, all at once, then Redis, so the others still reach it while
they close and Redis flushes its AOF last.
"""
from __future__ import annotations

import getpass
import shlex
from dataclasses import dataclass
from pathlib import Path

from inferq import commands

START_SECONDS = {"redis": 2, "api": 15, "flower": 10, "worker": 30}
"""How long each service must stay up after a start before a death counts as a crash, not a failed start.

Above how long each takes to fail at start: gunicorn retries a taken port for
about 5 s before it exits; a worker exits as soon as its model cannot load,
before the model's full load time (up to half a minute for ten base-size
models on two cores).
"""

START_RETRIES = 3
"""Tries after a first failed start before the stack stops, for a service that has never started since it did
(a configuration error shows by then; more tries would only delay saying so). One that has started is never
given up (stack/restarts.py)."""

SUPERVISORD_START_RETRIES = 0
"""supervisord's own retries after a failed start: none, the stack makes them. supervisord 4.3 waits 1, 2, 3 ...
s (one more each time, without a cap) and then gives up (FATAL) whether or not the service ever ran; with 0 it
reports each failed start at once as FATAL and the stack decides (supervisor/process.py, transition())."""

STOP_GRACE_SECONDS = 15
"""How long a service gets to stop after SIGTERM before its whole process group gets SIGKILL."""

LOG_MAX_BYTES = "20MB"
"""Each service's log under <state>/logs is rotated past this size (one backup kept)."""

REDIS_PRIORITY, SERVICES_PRIORITY = 100, 200
"""supervisord starts lower priorities first and stops them last: Redis before and after the rest."""

SERVICES_GROUP = "services"
"""The group of every service but Redis: stopped together, before Redis."""

WORKER_INDEX = "{process_num}"
"""Where a worker's command takes its number: supervisord writes each numbered process's own."""


def is_redis(name: str) -> bool:
    """Whether a program is one of the stack's own Redis processes: "redis", or with --ha "redis-replica" and
    the Sentinels "sentinel-N" (started before the services, stopped after them)."""
    return name == "redis" or name.startswith(("redis-", "sentinel-"))


def stack_commands(bin_dir: str, redis_programs: dict[str, list[str]]) -> dict[str, list[str]]:
    """The stack's services by name, as argument lists (commands.py), after our own Redis programs if any."""
    services = {
        "api": commands.api(bin_dir),
        "worker": commands.worker(commands.local_worker_node(WORKER_INDEX), bin_dir),
        "flower": commands.flower(bin_dir),
    }
    return {**redis_programs, **services}


@dataclass(frozen=True)
class Plan:
    """What the stack runs and where it keeps its files."""

    commands: dict[str, list[str]]
    workers: int
    cwd: Path
    log_dir: Path
    pid_file: Path
    socket: Path
    rpc_user: str
    rpc_password: str
    flower_env: dict[str, str]

    def process_names(self) -> list[str]:
        """supervisord's names of the processes, as they appear in its log and ours."""
        names = [name for name in self.commands if name != "worker"]
        if "worker" in self.commands:
            names += [f"worker.{i}" for i in range(1, self.workers + 1)]
        return names


def _value(text: str) -> str:
    # supervisord expands %(name)s in every value: a literal % is written %%.
    return text.replace("%", "%%")


def _env(values: dict[str, str]) -> str:
    # KEY="value" pairs, which supervisord parses with shlex.
    for key, value in values.items():
        if '"' in value or "\\" in value:
            raise ValueError(f"{key} holds a quote or a backslash, which supervisord's environment= cannot carry")
    return ",".join(f'{key}="{_value(value)}"' for key, value in values.items())


def _program(plan: Plan, name: str) -> list[str]:
    lines = [
        f"[program:{name}]",
        # No shell: supervisord splits the line as shlex does. A worker's number is supervisord's own.
        "command=" + _value(shlex.join(plan.commands[name])).replace(WORKER_INDEX, "%(process_num)d"),
        f"directory={_value(str(plan.cwd))}",
        "autostart=true",
        # Any exit while the stack runs is a death to repair, even exit 0 (a worker told to stop).
        "autorestart=true",
        f"startsecs={START_SECONDS.get(name, 5)}",
        f"startretries={SUPERVISORD_START_RETRIES}",
        "stopsignal=TERM",
        f"stopwaitsecs={STOP_GRACE_SECONDS}",
        # Signal the whole process group: gunicorn's and Flower's children stop with them.
        "stopasgroup=true",
        "killasgroup=true",
        "redirect_stderr=true",
        # Named as the process is: worker.3.log, api.log.
        f"stdout_logfile={_value(str(plan.log_dir))}/{'worker.%(process_num)d' if name == 'worker' else name}.log",
        f"stdout_logfile_maxbytes={LOG_MAX_BYTES}",
        "stdout_logfile_backups=1",
    ]
    if name == "worker":
        lines += ["process_name=worker.%(process_num)d", f"numprocs={plan.workers}", "numprocs_start=1"]
    if is_redis(name):
        lines.append(f"priority={REDIS_PRIORITY}")
    if name == "flower" and plan.flower_env:
        lines.append(f"environment={_env(plan.flower_env)}")
    return lines


def render(plan: Plan) -> str:
    """The supervisord.conf text for this plan."""
    sections = [
        "[supervisord]",
        "nodaemon=true",
        "silent=true",  # its log goes to a file that inferq-stack prints, like the services' logs
        f"logfile={_value(str(plan.log_dir))}/supervisord.log",
        f"logfile_maxbytes={LOG_MAX_BYTES}",
        "logfile_backups=1",
        "loglevel=info",
        f"pidfile={_value(str(plan.pid_file))}",
        f"childlogdir={_value(str(plan.log_dir))}",
        # The current user, stated, so supervisord does not warn about running as root.
        f"user={_value(getpass.getuser())}",
        "",
        "[unix_http_server]",
        f"file={_value(str(plan.socket))}",
        "chmod=0700",
        f"username={_value(plan.rpc_user)}",
        f"password={_value(plan.rpc_password)}",
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "",
    ]
    for name in plan.commands:
        sections += _program(plan, name) + [""]
    services = [name for name in plan.commands if not is_redis(name)]
    sections += [f"[group:{SERVICES_GROUP}]", f"programs={','.join(services)}", f"priority={SERVICES_PRIORITY}", ""]
    return "\n".join(sections)
