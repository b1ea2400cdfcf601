"""`make demo` end to end: the stack starts, the seed's 5 x 10 requests all succeed, the stack stops."""
from __future__ import annotations

import subprocess

import psutil
import pytest

from inferq.stack.processes import BIN
from tests.stack.conftest import stack_env

pytestmark = pytest.mark.slow


def test_demo_runs_the_seed_test_and_exits_zero(tiny_model, state_dir):
    env = stack_env(tiny_model, state_dir)
    before = {p.pid for p in psutil.process_iter()}
    demo = subprocess.run([str(BIN / "inferq-demo")], env=env, capture_output=True, text=True, timeout=240)
    assert demo.returncode == 0, demo.stdout + demo.stderr[-3000:]
    out = demo.stdout
    assert "jobs submitted    50 of 50" in out
    assert "succeeded         50" in out and "failed            0" in out and "lost              0" in out
    assert "p50" in out and "p99" in out and "jobs/s" in out
    # Both workers took jobs, and the stack is gone afterwards.
    assert "w1@" in out and "w2@" in out
    assert "stack stopped" in out
    stack_left = [p for p in psutil.process_iter(["pid", "cmdline"])
                  if p.pid not in before and str(state_dir) in " ".join(p.info["cmdline"] or [])]
    assert stack_left == []
