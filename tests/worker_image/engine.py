"""The container engine the tests build and run the worker image with (podman), and this machine's build options.

scripts/container-engine.sh installs and configures podman when it is missing;
scripts/container-base.sh builds a local stand-in for python:3.11-slim (no
registry is reachable here). The torch CPU wheel pip installs from on this
machine goes into the build as the `wheels` context, with no PyTorch index.
"""
from __future__ import annotations

import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.ci import in_ci

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

TEST_MODEL = "offline:base"
"""The model the tests bake: base-size DistilBERT (random weights), so the image costs what a real one does."""

TEST_TAG = "localhost/inferq-worker:test"
"""The tests' own tag: `fab deploy` tags by release, so neither removes the other's image."""

DOCKER = "/usr/bin/docker"
"""Debian's podman-docker: a `docker` that runs podman (a Docker CLI without a daemon may come first on PATH)."""


@dataclass(frozen=True)
class BuiltImage:
    """The worker image the tests built: tag, id, and what the build cost."""

    tag: str
    id: str
    build_s: float
    size_mb: float


class EngineUnavailable(RuntimeError):
    """Podman cannot be installed, configured or run here; the message says why."""


def refuse(reason: str):
    """Fail in CI, where the image must be tested; skip elsewhere, saying why."""
    if in_ci():
        pytest.fail(f"CI must build and run the worker image: {reason}")
    pytest.skip(reason)


def run_script(name: str, timeout: float) -> str:
    """Run one of scripts/; its stdout, or EngineUnavailable with its last lines."""
    try:
        done = subprocess.run([str(ROOT / "scripts" / name)], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EngineUnavailable(f"scripts/{name}: {exc}") from None
    if done.returncode != 0:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        raise EngineUnavailable(f"scripts/{name} exited {done.returncode}: {tail}")
    return done.stdout.strip()


def prepare() -> str:
    """Install and configure the engine if needed, build the local base image if missing; the base's name."""
    run_script("container-engine.sh", 600)
    return run_script("container-base.sh", 900).splitlines()[-1]


def torch_wheels() -> Path | None:
    """The directory among pip's find-links that holds the pinned torch's CPU wheel, if any."""
    pinned = re.search(r"^torch==([^+\s]+)", (ROOT / "constraints.txt").read_text(), re.M).group(1)
    listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                            timeout=60).stdout
    for line in listed.splitlines():
        key, _, value = line.partition("=")
        if key.endswith("find-links"):
            for place in value.strip("'\"").split():
                directory = Path(place.removeprefix("file://"))
                if list(directory.glob(f"torch-{pinned}+cpu-*.whl")):
                    return directory
    return None


def build_options(base: str) -> tuple[dict[str, str], dict[str, str]]:
    """(build args, build contexts) of the worker image on this machine."""
    args = {"BASE": base, "MODEL": TEST_MODEL}
    contexts = {}
    wheels = torch_wheels()
    if wheels:
        # The wheel is here: no index at all (an unreachable one costs pip minutes of retries).
        args["TORCH_INDEX"] = ""
        contexts["wheels"] = str(wheels)
    return args, contexts


def build(tag: str, base: str, context: Path = ROOT, **overrides: str) -> tuple[subprocess.CompletedProcess, float]:
    """`docker build` the worker image with this machine's options; (the finished process, seconds it took)."""
    args, contexts = build_options(base)
    args.update(overrides)
    if "TORCH_INDEX" in overrides:
        contexts.pop("wheels", None)  # the torch source under test is the index alone
    command = [DOCKER, "build", "-f", "worker_image/Dockerfile", "-t", tag,
               *(f"--build-arg={k}={v}" for k, v in args.items()),
               *(f"--build-context={k}={v}" for k, v in contexts.items()), str(context)]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=3600, cwd=ROOT)
    return done, time.monotonic() - started


def build_test_image(base: str) -> BuiltImage:
    """Build worker_image/Dockerfile from this checkout as TEST_TAG (layers cached between runs), or fail saying why."""
    done, seconds = build(TEST_TAG, base)
    if done.returncode != 0:
        lines = (done.stdout + done.stderr).strip().splitlines()
        reason = next((line for line in lines if line.startswith("inferq-build:")), "\n".join(lines[-20:]))
        pytest.fail(f"the worker image does not build: {reason}")
    inspected = podman("image", "inspect", "--format", "{{.Id}} {{.Size}}", TEST_TAG).stdout.split()
    return BuiltImage(TEST_TAG, inspected[0], seconds, int(inspected[1]) / 1e6)


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run podman; raise with its output if check and it fails."""
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited {done.returncode}: {done.stderr.strip()[-800:]}")
    return done
