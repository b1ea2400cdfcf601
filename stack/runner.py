"""``inferq-stack`` (``make run``): the whole system in the foreground, under supervisord.

Redis (ours, unless REDIS_URL names one), the API under gunicorn, WORKERS
Celery workers and Flower run as supervisord programs, each the command line
commands.py gives it (stack/supervisor_config.py). A service that dies is
restarted, whatever killed it, and each exit is logged with its cause; one
that keeps dying at start is started again with a growing backoff, for as
long as it keeps dying, unless it never started since the stack did (a
configuration error): then the stack stops with one line saying which and
why (stack/restarts.py, stack/supervision.py). Ctrl-C (or SIGTERM)
stops the services first, each as a whole process group, then Redis, and
inferq-stack exits 0. Every service's output is printed here, one stream,
each line under its service's name (stack/log_tail.py), and kept in
``<state>/logs``.

Why supervisord: honcho, which ran the stack before, stops everything when
any process exits, by design, and has no restart option (a --respawn pull
request was closed unmerged); this module also had to override its private
``_killall`` to stop Redis last.
supervisord is the long-kept standard for exactly this: restart on exit,
priority-ordered shutdown, process-group signals, an RPC interface to read
states and start processes, pure Python from PyPI. circus would do too, but brings ZeroMQ and tornado for features the
stack does not need.
"""
from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

from inferq import redislink
from inferq import settings as inferq_settings
from inferq.commands import local_worker_node
from inferq.settings import RedisLink, Stack
from inferq.stack import model_choice, readiness
from inferq.stack.flower_auth import credentials_path, ensure_credentials
from inferq.stack.log_tail import LogTail, Printer
from inferq.stack.processes import BIN
from inferq.stack.redis_server import RedisServer, free_port
from inferq.stack.sentinel import ReplicatedRedis, sentinels_ready
from inferq.stack.supervision import Supervisor, clear_logs, private_file, watch_services
from inferq.stack.supervisor_config import Plan, render, stack_commands

STACK_NAME = "stack"
"""The name the runner's own lines carry in the output."""


def bind_parts(bind: str) -> tuple[str, int]:
    """Split host:port."""
    host, _, port = bind.rpartition(":")
    return host or "127.0.0.1", int(port)


def start_url(bind: str) -> str:
    """The URL a browser on this machine uses for a bind address."""
    host, port = bind_parts(bind)
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"


def redis_setup(settings: Stack, state: Path, ha: bool = False) -> tuple[dict[str, str], dict[str, list[str]]]:
    """The Redis settings every process gets (REDIS_URL; with ha, the Sentinels' too), and our own Redis's
    programs by name (none if external)."""
    if settings.external_redis:
        return {"REDIS_URL": settings.redis.broker}, {}
    if ha:
        return ha_setup(settings, state)
    # A fresh password and port each run; the data (AOF) stays under the state dir across runs.
    server = RedisServer(state / "redis", port=free_port(),
                         appendfsync=settings.durability.appendfsync)
    server.data_dir.mkdir(parents=True, exist_ok=True)
    return {"REDIS_URL": server.url}, {"redis": server.command()}  # writes redis.conf, mode 600: the password


def ha_setup(settings: Stack, state: Path) -> tuple[dict[str, str], dict[str, list[str]]]:
    """--ha: a primary, a replica and three Sentinels (stack/sentinel.py), fresh ports and configs each run.

    The nodes start through stack/ha_node.py, so that one supervisord restarts comes back as the replica of
    whichever node the Sentinels promoted meanwhile."""
    group = ReplicatedRedis(state / "redis-ha", settings.failover, settings.redis.master_name,
                            appendfsync=settings.durability.appendfsync)
    run_id = secrets.token_hex(8)
    wait = settings.failover.down_after + settings.failover.failover_timeout
    programs: dict[str, list[str]] = {}
    for name, node in (("redis", group.primary), ("redis-replica", group.replica)):
        node.data_dir.mkdir(parents=True, exist_ok=True)
        config = node.write_config()
        programs[name] = [sys.executable, "-m", "inferq.stack.ha_node", str(config), "--run", run_id,
                          "--sentinels", group.sentinel_setting, "--master-name", group.master_name,
                          "--wait", f"{wait:g}"]
    for number, sentinel in enumerate(group.sentinels, 1):
        sentinel.data_dir.mkdir(parents=True, exist_ok=True)
        (sentinel.data_dir / "sentinel.conf").unlink(missing_ok=True)  # last run's ports and primary
        programs[f"sentinel-{number}"] = sentinel.command()
    return group.env(settings.redis.min_replicas), programs


def service_env(model: str, redis_env: dict[str, str]) -> dict[str, str]:
    """The environment supervisord starts with, which every service inherits."""
    return {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONUNBUFFERED": "1",  # lines show as they are printed, not when a buffer fills
        **redis_env,
        "INFERQ_MODEL": model,
    }


def build_plan(settings: Stack, state: Path, redis_programs: dict[str, list[str]], flower_auth: tuple[str, str],
               rpc_dir: Path) -> tuple[Plan, list[str]]:
    """What supervisord runs (every service; no Redis when external), and the worker hostnames it will start."""
    commands = stack_commands(str(BIN), redis_programs)
    flower_host, flower_port = bind_parts(settings.flower_bind)
    plan = Plan(
        # The services run where the stack was started: a relative INFERQ_MODEL means what it meant there.
        commands=commands, workers=settings.worker_count, cwd=Path.cwd(),
        log_dir=state / "logs", pid_file=state / "supervisor" / "supervisord.pid",
        # A short private directory: a Unix socket's path is limited to about 100 bytes.
        socket=rpc_dir / "supervisor.sock", rpc_user="inferq", rpc_password=secrets.token_urlsafe(18),
        # Only Flower gets its login, through its environment: never a command line.
        flower_env={"FLOWER_BASIC_AUTH": ":".join(flower_auth), "FLOWER_ADDRESS": flower_host,
                    "FLOWER_PORT": str(flower_port)},
    )
    hostname = socket.gethostname()
    workers = [local_worker_node(i, hostname) for i in range(1, settings.worker_count + 1)]
    return plan, workers


def ready_message(settings: Stack, model: str, n_workers: int) -> str:
    """What the stack prints once every part is ready."""
    api, flower = settings.client.url, start_url(settings.flower_bind)
    return "\n".join([
        f"{readiness.READY_LINE}: {n_workers} worker(s) ready, model {model}",
        f"  API      {api}    try: inferq submit 'what a lovely day' --wait 10",
        f"  Flower   {flower}    login: user:password in {credentials_path(settings.state_dir)}",
        f"  metrics  {api}/metrics  and  {flower}/metrics",
        "  Ctrl-C stops everything.",
    ])


def watch_ready(say, settings: Stack, model: str, redis_env: dict[str, str], workers: list[str],
                stop: threading.Event, up: threading.Event, on_failure) -> None:
    """Say when the stack is ready, and set up; if it never gets there, call on_failure with the reason."""
    link = inferq_settings.load(RedisLink, redis_env)
    client = redislink.client(link, link.broker, socket_timeout=2, socket_connect_timeout=2)
    since = time.time() - 2
    # Our own Redis has a new password at each start, so only this run's workers reach it: the
    # heartbeats of a past run's are forgotten, or /readyz would report them missing.
    forget = None if settings.external_redis else since
    started = time.monotonic()
    ok = readiness.wait_ready(client, workers, settings.client.url, start_url(settings.flower_bind), since,
                              settings.ready_timeout, stop, say, forget_before=forget)
    if ok and link.sentinels:
        ok = wait_sentinels(link, started + settings.ready_timeout, stop, say)
    if ok:
        up.set()
        say(ready_message(settings, model, len(workers)))
    elif not stop.is_set():
        on_failure(f"the stack was not ready within {settings.ready_timeout:g}s "
                   "(INFERQ_STACK_READY_TIMEOUT); stopping it: see the lines above")


def wait_sentinels(link: RedisLink, deadline: float, stop: threading.Event, say) -> bool:
    """--ha: until every Sentinel knows the replica and the other Sentinels (a failover needs both)."""
    while not sentinels_ready(link.sentinel_addresses, link.master_name):
        if stop.is_set() or time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    say("Sentinels ready: each knows the replica and the other Sentinels, so a failover can happen")
    return True


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
    parser.add_argument("--ha", action="store_true", help="Redis replicated: a primary, a replica and three "
                        "Sentinels (kill -9 the primary to watch a failover)")
    args = parser.parse_args(argv)
    inferq_settings.require(Stack)
    settings = inferq_settings.current(Stack)
    state = Path(settings.state_dir).resolve()
    state.mkdir(parents=True, exist_ok=True)
    lock = lock_state(state)  # noqa: F841 (held until exit)

    choice = model_choice.choose(settings.model.name, settings.hub_offline)
    print(model_choice.banner(choice, model_choice.prepare(choice, settings.model.cache)), flush=True)
    redis_env, redis_programs = redis_setup(settings, state, args.ha)
    print(f"Redis: {redis_summary(redis_env, redis_programs, state)}; {settings.worker_count} worker(s); "
          f"state in {state}; logs in {state / 'logs'}", flush=True)
    rpc_dir = Path(tempfile.mkdtemp(prefix="inferq-stack-"))
    try:
        return run(settings, state, choice.reference, redis_env, redis_programs, rpc_dir)
    finally:
        shutil.rmtree(rpc_dir, ignore_errors=True)


def redis_summary(redis_env: dict[str, str], redis_programs: dict[str, list[str]], state: Path) -> str:
    """Which Redis the stack uses, in a few words."""
    if not redis_programs:
        return "external (REDIS_URL)"
    if "INFERQ_REDIS_SENTINELS" in redis_env:
        return (f"our own, replicated (--ha): programs redis (the first primary) and redis-replica, Sentinels on "
                f"{redis_env['INFERQ_REDIS_SENTINELS']}; data in {state / 'redis-ha'}")
    return f"our own, data in {state / 'redis'}"


def run(settings: Stack, state: Path, model: str, redis_env: dict[str, str], redis_programs: dict[str, list[str]],
        rpc_dir: Path) -> int:
    """Start supervisord with the plan, print the stream, and stop it all on a signal or a failure."""
    plan, workers = build_plan(settings, state, redis_programs, ensure_credentials(state), rpc_dir)
    clear_logs(plan.log_dir)
    conf = private_file(state / "supervisor" / "supervisord.conf", render(plan))
    printer = Printer(width=max(len(name) for name in [STACK_NAME, "supervisord", *plan.process_names()]))
    say = lambda text: printer.line(STACK_NAME, text)  # noqa: E731
    supervisor = Supervisor(conf, plan, service_env(model, redis_env))
    stop, failed, requested, up = threading.Event(), threading.Event(), threading.Event(), threading.Event()

    def fail(reason: str) -> None:
        if not failed.is_set() and not requested.is_set():
            failed.set()
            say(reason)
            supervisor.stop()

    def on_signal(signum, _frame) -> None:
        # Ctrl-C in a terminal reaches supervisord as well; a signal sent to this
        # process alone (the demo, a test, kill) is passed on.
        requested.set()
        supervisor.stop()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    supervisor.start()  # before any thread: nothing is forked while a thread holds a lock
    if requested.is_set():  # a signal came while it was starting
        supervisor.stop()
    threads = [
        threading.Thread(target=LogTail(plan.log_dir, printer).follow, args=(stop,), name="log-tail"),
        threading.Thread(target=watch_services, args=(supervisor, stop, up, say, fail), name="restarts",
                         daemon=True),
        threading.Thread(target=watch_ready, args=(say, settings, model, redis_env, workers, stop, up, fail),
                         name="readiness", daemon=True),
    ]
    for thread in threads:
        thread.start()
    try:
        code = supervisor.wait()
    finally:
        stop.set()
        threads[0].join(timeout=5)  # the last lines of every log
    if failed.is_set():
        return 1
    if requested.is_set():
        say("stopped: every service has exited")
        return 0
    # supervisord exited by itself: a configuration it refused, or a signal sent to it alone.
    say(f"supervisord exited with {code}")
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
