"""A build argument that cannot work stops the build with one clear line, and leaves no image behind."""
from __future__ import annotations

import pytest

from tests.worker_image import engine

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def failed_build(container_base, tag: str, **args: str) -> list[str]:
    """Build with args that must fail; the output's `inferq-build:` lines (and no image tagged)."""
    engine.podman("rmi", "-f", tag, check=False)
    done, _ = engine.build(tag, container_base, **args)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output[-2000:]
    assert engine.podman("image", "exists", tag, check=False).returncode == 1
    return [line for line in output.splitlines() if line.startswith("inferq-build:")]


def test_no_reachable_torch_source_is_one_line(container_base, worker_image):
    # Nothing listens on port 9 of the build container's loopback, and PyPI has no +cpu build.
    lines = failed_build(container_base, "localhost/inferq-worker:no-torch", TORCH_INDEX="http://127.0.0.1:9/simple")
    assert len(lines) == 1, lines
    assert "torch==2.13.0+cpu is not installable from TORCH_INDEX='http://127.0.0.1:9/simple'" in lines[0]


def test_a_model_that_cannot_be_built_is_one_line(container_base, worker_image):
    lines = failed_build(container_base, "localhost/inferq-worker:no-model", MODEL="offline:huge")
    assert lines == ["inferq-build: cannot bake MODEL=offline:huge: ValueError: unknown size 'huge': "
                     "choose one of tiny, base"], lines


def test_a_model_directory_that_is_not_a_model_is_one_line(container_base, worker_image):
    lines = failed_build(container_base, "localhost/inferq-worker:no-model", MODEL="/nonexistent/model")
    assert len(lines) == 1 and lines[0].startswith("inferq-build: cannot bake MODEL=/nonexistent/model: "), lines
