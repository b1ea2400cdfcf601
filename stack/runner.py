"""``inferq-stack`` (``make run``): the whole system in the foreground, under honcho.

Redis (ours, unless REDIS_URL names one), the API under gunicorn, WORKERS
Celery workers and Flower run as the lines of the project's Procfile. honcho
multiplexes their output, and on Ctrl-C (or when any of them dies) stops every
one of them: each runs in its own process group, which honcho signals whole,
SIGTERM first (Redis last) and SIGKILL STOP_GRACE_SECONDS later.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import honcho.manager
import redis
from honcho.environ import expand_processes, parse_procfile
from honcho.manager import Manager
from honcho.printer import Message, Printer

from inferq import settings as inferq_settings
from inferq.settings import Stack
from inferq.stack import model_choice, readiness
from inferq.stack.flower_auth import credentials_path, ensure_credentials
from inferq.stack.processes import BIN
from inferq.stack.redis_server import RedisServer, free_port

PROCFILE = Path(__file__).resolve().parent.parent / "Procfile"
"""The Procfile at the project root."""

SIGINT_EXIT, SIGTERM_EXIT = 130, 143
"""What honcho returns when it stopped everything because it got SIGINT or SIGTERM."""

STACK_NAME = "stack"
"""The name the runner's own lines carry in honcho's output."""


STOP_GRACE_SECONDS = 15
"""How long the services get to stop after SIGTERM before honcho sends SIGKILL (honcho's own default: 5)."""


class StackManager(Manager):
    """honcho's Manager, stopping our Redis only once every other service is gone.

    honcho signals all processes at once; workers and the API that lose Redis
    mid-shutdown keep reconnecting until they are killed. Stopping Redis last
    lets them deregister and close cleanly, and Redis then flushes its AOF.
    """

    LAST = "redis."

    def _killall(self, force=False):
        if force:
            return super()._killall(force=True)
        for name, entry in self._processes.items():
            if "returncode" not in entry and not name.startswith(self.LAST):
                self._system_print(f"sending SIGTERM to {name} (pid {entry['pid']})\n")
                self._procmgr.terminate(entry["pid"])
        threading.Thread(target=self._stop_last, name="stop-redis-last", daemon=True).start()

    def _stop_last(self):
        while any("returncode" not in entry for name, entry in self._processes.items()
                  if not name.startswith(self.LAST)):
            time.sleep(0.1)
        for name, entry in self._processes.items():
            if "returncode" not in entry and name.startswith(self.LAST):
                self._system_print(f"sending SIGTERM to {name} (pid {entry['pid']}): the others have stopped\n")
                self._procmgr.terminate(entry["pid"])


def procfile_commands(procfile: Path = PROCFILE) -> dict[str, str]:
    """The Procfile's commands by process type (tests run single lines of it)."""
    return dict(parse_procfile(procfile.read_text()).processes)


def bind_parts(bind: str) -> tuple[str, int]:
    """Split host:port."""
    host, _, port = bind.rpartition(":")
    return host or "127.0.0.1", int(port)


def start_url(bind: str) -> str:
    """The URL a browser on this machine uses for a bind address."""
    host, port = bind_parts(bind)
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"


def redis_setup(settings: Stack, state: Path) -> tuple[str, dict[str, str]]:
    """The Redis URL for every process, and the Procfile environment of our own Redis (none if external)."""
    if settings.external_redis:
        return settings.broker, {}
    # A fresh password and port each run; the data (AOF) stays under the state dir across runs.
    server = RedisServer(state / "redis", port=free_port(),
                         appendfsync=settings.redis_appendfsync)
    server.data_dir.mkdir(parents=True, exist_ok=True)
    command = server.command()  # writes redis.conf, mode 600: it holds the password
    return server.url, {"INFERQ_REDIS_SERVER": command[0], "INFERQ_REDIS_CONF": command[1]}


def build_manager(settings: Stack, model: str, redis_url: str, redis_env: dict[str, str],
                  flower_auth: tuple[str, str], procfile: Path) -> tuple[Manager, list[str]]:
    """A honcho Manager with every Procfile line to run, and the worker hostnames it will start."""
    processes = procfile_commands(procfile)
    if not redis_env:
        processes.pop("redis", None)
    flower_host, flower_port = bind_parts(settings.flower_bind)
    base = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONUNBUFFERED": "1",  # lines show as they are printed, not when a buffer fills
        "REDIS_URL": redis_url,
        "INFERQ_MODEL": model,
        **redis_env,
    }
    honcho.manager.KILL_WAIT = STOP_GRACE_SECONDS  # read by Manager.loop at each check
    manager = StackManager(Printer(sys.stdout))
    hostname = socket.gethostname()
    workers = []
    for params in expand_processes(processes, concurrency={"worker": settings.worker_count}, env=base):
        env = dict(params.env)
        if params.name.startswith("flower."):
            env.update(FLOWER_BASIC_AUTH=":".join(flower_auth), FLOWER_ADDRESS=flower_host,
                       FLOWER_PORT=str(flower_port))
        if params.name.startswith("worker."):
            workers.append(f"w{params.name.split('.', 1)[1]}@{hostname}")
        manager.add_process(params.name, params.cmd, quiet=params.quiet, env=env,
                            cwd=str(procfile.parent))
    return manager, workers


def ready_message(settings: Stack, model: str, n_workers: int) -> str:
    """What the stack prints once every part is ready."""
    api, flower = settings.url, start_url(settings.flower_bind)
    return "\n".join([
        f"{readiness.READY_LINE}: {n_workers} worker(s) ready, model {model}",
        f"  API      {api}    try: inferq submit 'what a lovely day' --wait 10",
        f"  Flower   {flower}    login: user:password in {credentials_path(settings.state_dir)}",
        f"  metrics  {api}/metrics  and  {flower}/metrics",
        "  Ctrl-C stops everything.",
    ])


def watch(manager: Manager, settings: Stack, model: str, redis_url: str, workers: list[str],
          stop: threading.Event, failed: threading.Event) -> None:
    """Say when the stack is ready; if it never gets there, stop it."""
    def say(text: str) -> None:
        manager.events.put(Message(type="line", data=text, time=datetime.now(), name=STACK_NAME, colour=None))

    # Let honcho fork its process runners first: forking while this thread
    # holds a socket or a lock would copy them into every child.
    if stop.wait(1.0):
        return
    client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
    since = time.time() - 2
    ok = readiness.wait_ready(client, workers, settings.url, start_url(settings.flower_bind), since,
                              settings.ready_timeout, stop, say)
    if ok:
        say(ready_message(settings, model, len(workers)))
    elif not stop.is_set():
        say(f"the stack was not ready within {settings.ready_timeout:g}s "
            "(INFERQ_STACK_READY_TIMEOUT); stopping it: see the lines above")
        failed.set()
        os.kill(os.getpid(), signal.SIGTERM)


def lock_state(state: Path):
    """Hold an exclusive lock on the state dir for this process's life: two stacks must never share one Redis AOF."""
    import fcntl

    handle = open(state / "stack.lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        raise SystemExit(f"inferq-stack: {state} is in use by a running stack (pid {holder}); "
                         "stop it, or set INFERQ_STATE_DIR to another directory") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def main(argv: list[str] | None = None) -> int:
    """Run the whole stack in the foreground until Ctrl-C."""
    parser = argparse.ArgumentParser(prog="inferq-stack", description=__doc__.splitlines()[0])
    parser.add_argument("--procfile", type=Path, default=PROCFILE, help="Procfile to run (default: %(default)s)")
    args = parser.parse_args(argv)
    inferq_settings.require(Stack)
    settings = inferq_settings.current(Stack)
    state = Path(settings.state_dir).resolve()
    state.mkdir(parents=True, exist_ok=True)
    lock = lock_state(state)  # noqa: F841 (held until exit)

    choice = model_choice.choose(settings.model, settings.hub_offline)
    print(model_choice.banner(choice, model_choice.prepare(choice, settings.model_cache)), flush=True)
    redis_url, redis_env = redis_setup(settings, state)
    print(f"Redis: {'external (REDIS_URL)' if not redis_env else 'our own, data in ' + str(state / 'redis')}; "
          f"{settings.worker_count} worker(s); state in {state}", flush=True)
    manager, workers = build_manager(settings, choice.reference, redis_url, redis_env,
                                     ensure_credentials(state), args.procfile)
    stop, failed = threading.Event(), threading.Event()
    watcher = threading.Thread(target=watch, name="readiness", daemon=True,
                               args=(manager, settings, choice.reference, redis_url, workers, stop, failed))
    watcher.start()
    try:
        manager.loop()
    finally:
        stop.set()
    if failed.is_set():
        return 1
    # Ctrl-C (or SIGTERM) is how this foreground stack is meant to stop: a clean exit.
    # Any other code is that of a service that died and took the stack down.
    return 0 if manager.returncode in (SIGINT_EXIT, SIGTERM_EXIT) else manager.returncode or 0


if __name__ == "__main__":
    sys.exit(main())
