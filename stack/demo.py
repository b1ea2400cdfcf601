"""``inferq-demo`` (``make demo``): start the stack, run the seed's test through the API, summarize, stop.

The stack is the same ``inferq-stack`` that ``make run`` starts, as a child,
on free ports and with its own state directory (``<state>/demo``), so a demo
never collides with a stack already running. Exits non-zero if any job
failed or was lost.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tqdm import tqdm

from inferq import settings as inferq_settings
from inferq.client.api import ApiUnreachable, Client
from inferq.settings import Stack
from inferq.stack import seed_load
from inferq.stack.processes import BIN, tail
from inferq.stack.readiness import READY_LINE
from inferq.stack.redis_server import free_port

STOP_SECONDS = 30.0
"""How long the stack gets to stop after Ctrl-C before it is killed (supervisord SIGKILLs a service after 15 s)."""


def start_stack(state: Path, env: dict[str, str]) -> tuple[subprocess.Popen, Path]:
    """Start inferq-stack in its own session, its output in state/stack.log."""
    state.mkdir(parents=True, exist_ok=True)
    log_path = state / "stack.log"
    log = open(log_path, "wb")
    process = subprocess.Popen([str(BIN / "inferq-stack")], env=env, stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True)
    return process, log_path


def wait_for_ready(process: subprocess.Popen, log_path: Path, timeout: float) -> list[str]:
    """Wait for the stack's ready line; return the lines it printed before its services started."""
    deadline = time.monotonic() + timeout
    # disable=None: a live timer on a terminal, nothing in a log file.
    with tqdm(desc="starting the stack", bar_format="{desc}: {elapsed}", file=sys.stderr, disable=None) as bar:
        while time.monotonic() < deadline:
            text = log_path.read_text(errors="replace")
            if READY_LINE in text:
                return [line for line in text.splitlines() if line.startswith(("!!", "model:"))]
            if process.poll() is not None:
                raise RuntimeError(f"the stack exited with {process.returncode}:\n{tail(log_path)}")
            bar.update(0)
            time.sleep(0.2)
    raise RuntimeError(f"the stack was not ready within {timeout:g}s:\n{tail(log_path)}")


def stop_stack(process: subprocess.Popen) -> int:
    """Stop the stack as Ctrl-C does; kill its whole session if it lingers."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode


def main(argv: list[str] | None = None) -> int:
    """Run the demo; exit 0 only if every job succeeded."""
    parser = argparse.ArgumentParser(prog="inferq-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=seed_load.SEED_THREADS)
    parser.add_argument("--requests", type=int, default=seed_load.SEED_REQUESTS_PER_THREAD, help="per thread")
    parser.add_argument("--timeout", type=float, default=300.0, help="longest wait for each job (seconds)")
    args = parser.parse_args(argv)
    inferq_settings.require(Stack)
    settings = inferq_settings.current(Stack)

    state = Path(settings.state_dir).resolve() / "demo"
    api_bind, flower_bind = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    env = {**os.environ, "INFERQ_STATE_DIR": str(state), "INFERQ_API_BIND": api_bind,
           "INFERQ_FLOWER_BIND": flower_bind, "INFERQ_API_URL": f"http://{api_bind}"}
    print(f"inferq demo: {settings.worker_count} worker(s), the seed's test "
          f"({args.threads} threads x {args.requests} requests); stack log: {state / 'stack.log'}", flush=True)
    process, log_path = start_stack(state, env)
    try:
        try:
            for line in wait_for_ready(process, log_path, settings.ready_timeout):
                print(line, flush=True)
        except RuntimeError as exc:
            print(f"inferq demo: {exc}", file=sys.stderr)
            return 1
        expected = args.threads * args.requests
        # With INFERQ_API_KEYS set the stack's API wants a key: send INFERQ_API_KEY, else the first configured one.
        client = Client(f"http://{api_bind}", settings.client.api_key or next(iter(settings.keys.accepted), ""))
        try:
            with tqdm(total=expected, unit="job", desc="jobs", file=sys.stderr) as bar:
                outcomes, elapsed = seed_load.run(client, args.threads, args.requests, args.timeout,
                                                  on_done=lambda _: bar.update(1))
        except ApiUnreachable as exc:
            print(f"inferq demo: {exc}; stack log: {log_path}", file=sys.stderr)
            return 1
        print(seed_load.summary(outcomes, expected, elapsed, args.threads, args.requests), flush=True)
        ok = sum(o.status == "succeeded" for o in outcomes) == expected
    except KeyboardInterrupt:
        print("inferq demo: interrupted; stopping the stack", file=sys.stderr)
        ok = False
    finally:
        code = stop_stack(process)
    print(f"stack stopped (exit {code}); {'all jobs succeeded' if ok else 'SOME JOBS FAILED OR WERE LOST'}",
          flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
