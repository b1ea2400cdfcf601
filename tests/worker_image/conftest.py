"""The worker image, built once per session with this machine's options (tests/worker_image/engine.py)."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.worker_image import engine

TAG = "localhost/inferq-worker:test"
"""The tests' own tag: `fab deploy` tags by release, so neither removes the other's image."""


@dataclass(frozen=True)
class BuiltImage:
    tag: str
    id: str
    build_s: float
    size_mb: float


@pytest.fixture(scope="session")
def worker_image(container_base) -> BuiltImage:
    """worker_image/Dockerfile built from this checkout (layers cached by the engine between runs)."""
    done, seconds = engine.build(TAG, container_base)
    if done.returncode != 0:
        lines = (done.stdout + done.stderr).strip().splitlines()
        reason = next((line for line in lines if line.startswith("inferq-build:")), "\n".join(lines[-20:]))
        pytest.fail(f"the worker image does not build: {reason}")
    inspected = engine.podman("image", "inspect", "--format", "{{.Id}} {{.Size}}", TAG).stdout.split()
    return BuiltImage(TAG, inspected[0], seconds, int(inspected[1]) / 1e6)
