"""Test-only fault injection: texts that make a job sleep or kill its worker.

Off unless ``INFERQ_TEST_FAULTS=1``; never enable it in a deployment. The
reliability tests need jobs that run long (to be in flight when a worker is
stopped) and jobs that kill their worker (a poison input), and no real input
does either on demand.
"""
from __future__ import annotations

import logging
import os
import signal
import time

from inferq.settings import Worker, current

log = logging.getLogger(__name__)

SLEEP_PREFIX = "inferq-test-sleep:"
"""``inferq-test-sleep:2.5`` holds the job 2.5 s before inference."""

KILL_WORKER = "inferq-test-kill-worker"
"""A text that SIGKILLs the worker process running it: a poison job."""

FAIL_JOB = "inferq-test-fail-job"
"""A text that makes its job fail with an exception (the worker lives on)."""


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
        if text.startswith(SLEEP_PREFIX):
            time.sleep(float(text[len(SLEEP_PREFIX):]))
