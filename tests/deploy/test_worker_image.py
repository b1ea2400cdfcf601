"""The worker image and compose file, checked statically (no Docker engine here): hadolint and the compose spec."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

from inferq.stack.processes import worker_command
from tests.deploy.conftest import BIN, ROOT

DOCKERFILE = ROOT / "worker_image" / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"


def hadolint(path: Path) -> subprocess.CompletedProcess:
    # Threshold "info": any finding at all fails the check.
    return subprocess.run([str(BIN / "hadolint"), "--failure-threshold", "info", str(path)],
                          capture_output=True, text=True, timeout=60)


def compose_check(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path)],
                          capture_output=True, text=True, timeout=60)


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    return [tuple(line.strip().split(" ", 1)) for line in joined.splitlines() if line.strip()]


def test_dockerfile_passes_hadolint_with_no_finding_at_all():
    result = hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_does_catch_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install torch\nCMD inferq-worker\n")
    result = hadolint(bad)
    assert result.returncode != 0 and "DL3007" in result.stdout


def test_dockerfile_is_slim_non_root_pinned_with_healthcheck_and_the_worker_command():
    steps = instructions(DOCKERFILE.read_text())
    kinds = [kind for kind, _ in steps]
    assert kinds.count("FROM") == 1 and re.fullmatch(r"python:3\.11\.\d+-slim-\w+", dict(steps)["FROM"])
    user = [args for kind, args in steps if kind == "USER"]
    assert user and user[-1].split(":")[0] not in ("0", "root")
    runs = " ".join(args for kind, args in steps if kind == "RUN")
    assert '"torch==2.13.0+cpu"' in runs and "https://download.pytorch.org/whl/cpu" in runs
    assert runs.count("-c /tmp/constraints.txt") == 2  # every pip install is pinned
    assert "bake_model.py" in runs  # the model is baked in at build time
    healthcheck = dict(steps)["HEALTHCHECK"]
    assert "celery -A inferq.celery_app inspect ping" in healthcheck
    cmd = json.loads(dict(steps)["CMD"])
    # Exactly the command the local stack runs, with the container's hostname in the node name.
    local = worker_command("worker")
    assert cmd == [Path(local[0]).name, *local[1:]]


def test_bake_model_builds_a_loadable_model_offline(tmp_path):
    out = tmp_path / "model"
    subprocess.run([sys.executable, str(ROOT / "worker_image" / "bake_model.py"), "offline:tiny", str(out)],
                   check=True, capture_output=True, timeout=120, cwd=ROOT)
    from inferq.tasks.model import load

    loaded = load(str(out), str(tmp_path / "cache"), "int8", 1)
    assert loaded.labels == ["NEGATIVE", "POSITIVE"]


def test_compose_file_is_valid_against_the_compose_specification():
    result = compose_check(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_validation_does_catch_a_bad_file(tmp_path):
    bad = tmp_path / "docker-compose.yml"
    bad.write_text("services:\n  worker-1:\n    image: x\n    concurrency: 1\n")
    assert compose_check(bad).returncode != 0


def test_compose_runs_two_single_threaded_workers_with_limits_and_the_env_file():
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    assert sorted(services) == ["worker-1", "worker-2"]
    hostnames = set()
    for service in services.values():
        assert service["environment"]["INFERQ_TORCH_THREADS"] == "1"
        assert service["restart"] == "unless-stopped"
        assert service["mem_limit"]
        assert service["env_file"] == ["./worker.env"]
        assert "command" not in service and "entrypoint" not in service  # the image's inferq-worker
        assert "ports" not in service  # workers only connect out, to Redis
        hostnames.add(service["hostname"])
    assert len(hostnames) == 2  # distinct Celery node names
