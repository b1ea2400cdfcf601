"""Run inferq-stack and inferq-demo as make run / make demo do, on free ports and a private state dir."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from inferq.stack.redis_server import free_port

ENV_DROPPED = ("REDIS_URL", "INFERQ_BROKER_URL", "INFERQ_RESULT_BACKEND")
"""Unset, so the stack starts its own Redis as `make run` does by default."""


def stack_env(tiny_model: Path, state: Path) -> dict[str, str]:
    """The environment of a stack under test: tiny model, 2 workers, non-default free ports."""
    env = {k: v for k, v in os.environ.items() if k not in ENV_DROPPED}
    api_bind = f"127.0.0.1:{free_port()}"
    env.update(
        WORKERS="2",
        INFERQ_MODEL=str(tiny_model),
        INFERQ_STATE_DIR=str(state),
        INFERQ_API_BIND=api_bind,
        INFERQ_API_URL=f"http://{api_bind}",
        INFERQ_FLOWER_BIND=f"127.0.0.1:{free_port()}",
        INFERQ_HEARTBEAT_SECONDS="0.5",
        INFERQ_STACK_READY_TIMEOUT="120",
    )
    return env


@pytest.fixture()
def state_dir(tmp_path) -> Path:
    return tmp_path / "state"
