"""Test-only fault injection: texts that make a job sleep or kill its worker, and a log of every run.

Off unless ``INFERQ_TEST_FAULTS=1``; never enable it in a deployment. The
reliability tests need jobs that run long (to be in flight when a worker is
stopped) and jobs that kill their worker (a poison input), and no real input
does either on demand. The crash checker (tests/reliability/checker.py) also
needs to know how often each job ran, and with what result, across crashes
that Redis itself may not remember: with ``INFERQ_TEST_RUN_LOG`` set, each
worker process appends a line per job state it stored to a file of its own.
"""
from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

from inferq.settings import Worker, current

log = logging.getLogger(__name__)

SLEEP_PREFIX = "inferq-test-sleep:"
"""``inferq-test-sleep:2.5`` holds the job 2.5 s before inference."""

KILL_WORKER = "inferq-test-kill-worker"
"""A text that SIGKILLs the worker process running it: a poison job."""

FAIL_JOB = "inferq-test-fail-job"
"""A text that makes its job fail with an exception (the worker lives on)."""

EXHAUST_MEMORY = "inferq-test-exhaust-memory"
"""A text that makes its worker allocate memory until the kernel's OOM killer stops it (inside a memory limit)."""

EXHAUST_CAP_MB = 4096
"""Where EXHAUST_MEMORY stops allocating and fails instead: a worker run without a memory limit must not take
the machine's memory with it."""


class InjectedFault(Exception):
    """The failure FAIL_JOB asks for."""


def inject(texts: list[str]) -> None:
    """Act on test fault texts, if fault injection is enabled; otherwise do nothing."""
    if not current(Worker).test_faults:
        return
    for text in texts:
        if text == KILL_WORKER:
            log.warning("test fault: killing worker pid %d", os.getpid())
            os.kill(os.getpid(), signal.SIGKILL)
        if text == FAIL_JOB:
            raise InjectedFault("test fault: this job fails")
        if text == EXHAUST_MEMORY:
            log.warning("test fault: allocating memory until killed, pid %d", os.getpid())
            hoard: list[bytes] = []
            while len(hoard) < EXHAUST_CAP_MB // 64:  # filled, so the pages count against the limit
                hoard.append(b"\x01" * (64 * 2**20))
            raise InjectedFault(f"test fault: {EXHAUST_CAP_MB} MB allocated and no memory limit stopped it")
        if text.startswith(SLEEP_PREFIX):
            time.sleep(float(text[len(SLEEP_PREFIX):]))


def slow_pass(started: float) -> None:
    """Hold a forward pass begun at started (monotonic) until INFERQ_TEST_PASS_SECONDS have passed, if enabled."""
    settings = current(Worker)
    if settings.test_faults and settings.test_pass_seconds:
        time.sleep(max(0.0, started + settings.test_pass_seconds - time.monotonic()))


def record_runs(outcomes: list[tuple[str, Any]]) -> None:
    """Append "<job id> <labels or state>" for each stored outcome to this process's run log, if enabled."""
    settings = current(Worker)
    if not (settings.test_faults and settings.test_run_log):
        return
    lines = []
    for job_id, outcome in outcomes:
        if isinstance(outcome, dict):
            summary = ",".join(f"{r['label']}:{max(r['probabilities'].values()):.6f}" for r in outcome["results"])
        else:
            summary = type(outcome).__name__ if isinstance(outcome, BaseException) else str(outcome)
        lines.append(f"{job_id} {summary}\n")
    path = Path(settings.test_run_log) / f"runs-{os.getpid()}.log"
    with open(path, "a") as log_file:  # small appends: whole lines, even with a kill right after
        log_file.write("".join(lines))
