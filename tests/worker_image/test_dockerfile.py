"""The worker image and compose file, checked statically: hadolint, the compose spec, what the Dockerfile says.

tests/worker_image/test_container.py builds and runs the image itself.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from inferq.deploy import config_files, nodes
from inferq.stack.processes import worker_command
from tests.worker_image.engine import BIN, ROOT

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


def stages(text: str) -> dict[str, list[tuple[str, str]]]:
    """The Dockerfile's instructions per stage (by name; "" for what comes before the first FROM)."""
    found: dict[str, list[tuple[str, str]]] = {"": []}
    current = ""
    for kind, args in instructions(text):
        if kind == "FROM":
            current = args.split(" AS ")[-1] if " AS " in args else args
            found[current] = []
        found[current].append((kind, args))
    return found


def test_dockerfile_is_two_stages_slim_non_root_pinned_with_healthcheck_and_the_worker_command():
    text = DOCKERFILE.read_text()
    steps = instructions(text)
    args = dict(a.split("=", 1) for kind, a in steps if kind == "ARG" and "=" in a)
    # The official slim image by digest (a tag can be re-pushed), and the PyTorch CPU index.
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+@sha256:[0-9a-f]{64}", args["BASE"])
    assert args["TORCH_INDEX"] == "https://download.pytorch.org/whl/cpu"
    assert re.fullmatch(r"[0-9a-f]{40}", args["MODEL_REVISION"])  # the hub model, pinned
    assert args["PRECISION"] == "onnx-int8"
    froms = [a for kind, a in steps if kind == "FROM"]
    assert froms == ["scratch AS wheels", "${BASE} AS export", "export AS torch", "${BASE} AS runtime"]
    by_stage = stages(text)
    runtime = by_stage["runtime"]  # the last stage: what a plain build produces
    # The runtime stage: hash-locked packages, our wheel without dependencies, the export alone; no torch.
    installs = [a for kind, a in runtime if kind == "RUN" and "pip install" in a]
    assert "--require-hashes -r /opt/inferq/build/requirements.lock" in installs[0], installs
    assert all("--require-hashes" in a or "--no-deps /opt/inferq/dist/" in a for a in installs), installs
    assert not [a for kind, a in runtime if "torch==" in a or "transformers" in a]
    copies = [a for kind, a in runtime if kind == "COPY" and "--from=" in a]
    assert copies == ["--from=export /opt/inferq/export /opt/inferq/model",
                      "--from=export /opt/inferq/dist /opt/inferq/dist"]
    # The export stage installs torch first and alone, every pip install pinned.
    export_installs = [a for kind, a in by_stage["export"] if kind == "RUN" and "pip install" in a]
    assert '"torch==2.13.0+cpu"' in export_installs[0] and "--find-links /tmp/wheels" in export_installs[0]
    assert all("-c /opt/inferq/build/constraints.txt" in a for a in export_installs), export_installs
    for stage in ("torch", "runtime"):  # the torch path stays a build option (--target torch)
        kinds = dict(by_stage[stage])
        assert kinds["USER"].split(":")[0] not in ("0", "root")
        assert "celery -A inferq.celery_app inspect ping" in kinds["HEALTHCHECK"]
        assert json.loads(kinds["ENTRYPOINT"]) == ["inferq-env"]
        cmd = json.loads(kinds["CMD"])
        # Exactly the command the local stack runs, with the container's hostname in the node name.
        local = worker_command("worker")
        assert cmd == [Path(local[0]).name, *local[1:]] == nodes.WORKER_COMMAND


def test_the_runtime_lock_matches_setup_cfg_and_constraints_and_holds_no_export_tool():
    checked = subprocess.run([sys.executable, str(ROOT / "worker_image" / "lock.py"), "--check"],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    lock = (ROOT / "worker_image" / "requirements.lock").read_text()
    names = re.findall(r"^([a-z0-9.\-]+)==\S+ \\\n    --hash=sha256:[0-9a-f]{64}$", lock, re.M)
    assert len(names) == lock.count("==") and {"celery", "onnxruntime", "tokenizers", "redis"} <= set(names)
    assert not {"torch", "transformers", "onnx", "safetensors"} & set(names)


def test_dependencies_and_model_come_before_the_source():
    steps = [kind + " " + args for kind, args in instructions(DOCKERFILE.read_text())]
    order = [next(i for i, step in enumerate(steps) if needle in step)
             for needle in ('"torch==', "-r /opt/inferq/build/requirements.txt", "bake_model.py", "COPY . ",
                            "--require-hashes", "bake_model.py --check")]
    assert order[:4] == sorted(order[:4]), steps
    # A source change rebuilds only what follows the source copy: nothing before it copies the whole tree.
    before = steps[:order[3]]
    assert not [s for s in before if s.startswith("COPY") and " . " in f"{s} "], before
    ignored = (ROOT / ".dockerignore").read_text().split()
    for private in (".git", ".venv", "secrets", "state", "tests", ".env", "**/*.pem", "**/*.key"):
        assert private in ignored
    gitignored = (ROOT / ".gitignore").read_text().split()
    for private in (".env", ".env.*", "*.pem", "*.key", "secrets/"):
        assert private in gitignored


def test_bake_model_exports_where_the_worker_looks_and_leaves_it_readable(tmp_path):
    model, cache = tmp_path / "model", tmp_path / "cache"
    baked = subprocess.run([sys.executable, str(ROOT / "worker_image" / "bake_model.py"), "offline:tiny", "",
                            "onnx-int8", str(model), str(cache)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert baked.returncode == 0, baked.stdout + baked.stderr
    for path in [*model.rglob("*"), *cache.rglob("*")]:
        # Readable by any user: the container runs as 10001, the build as root.
        assert path.stat().st_mode & 0o004, path
    assert {p.stat().st_mtime for p in model.iterdir()} == {0}  # survives `docker save` (whole seconds)
    from inferq.model.onnx_export import cached

    assert cached(str(model), str(cache), True) is not None
    # With an export directory: the export alone, which a worker loads as its model (the runtime stage's way).
    exported = tmp_path / "export"
    again = subprocess.run([sys.executable, str(ROOT / "worker_image" / "bake_model.py"), "offline:tiny", "",
                            "onnx-int8", str(tmp_path / "model2"), str(tmp_path / "cache2"), str(exported)],
                           capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert again.returncode == 0, again.stdout + again.stderr
    assert (exported / "model.onnx").is_file() and not list(exported.glob("*.safetensors"))
    alone = subprocess.run([sys.executable, str(ROOT / "worker_image" / "bake_model.py"), "--check"],
                           capture_output=True, text=True, timeout=300, cwd=ROOT,
                           env={**os.environ, "INFERQ_MODEL": str(exported),
                                "INFERQ_MODEL_CACHE": str(tmp_path / "none"), "INFERQ_PRECISION": "onnx-int8"})
    assert alone.returncode == 0 and alone.stdout.startswith("inferq-build: "), alone.stdout + alone.stderr
    checked = subprocess.run([sys.executable, str(ROOT / "worker_image" / "bake_model.py"), "--check"],
                             capture_output=True, text=True, timeout=300, cwd=ROOT,
                             env={**os.environ, "INFERQ_MODEL": str(model), "INFERQ_MODEL_CACHE": str(cache),
                                  "INFERQ_PRECISION": "onnx-int8"})
    assert checked.returncode == 0 and checked.stdout.startswith("inferq-build: "), checked.stdout + checked.stderr
    empty = subprocess.run([sys.executable, str(ROOT / "worker_image" / "bake_model.py"), "--check"],
                           capture_output=True, text=True, timeout=300, cwd=ROOT,
                           env={**os.environ, "INFERQ_MODEL": str(model), "INFERQ_MODEL_CACHE": str(tmp_path / "none"),
                                "INFERQ_PRECISION": "onnx-int8"})
    assert empty.returncode == 1
    assert empty.stdout.strip().splitlines() == [
        f"inferq-build: the baked model does not load: RuntimeError: no ONNX export of {model} under "
        f"{tmp_path / 'none'}: every worker would export it again at start"]


def test_compose_file_is_valid_against_the_compose_specification():
    result = compose_check(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_validation_does_catch_a_bad_file(tmp_path):
    bad = tmp_path / "docker-compose.yml"
    bad.write_text("services:\n  worker-1:\n    image: x\n    concurrency: 1\n")
    assert compose_check(bad).returncode != 0


def test_compose_runs_two_single_threaded_workers_with_limits_and_the_env_file():
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    # worker.env, and the cluster's CA the workers verify Redis's certificate with (deploy/config_files.py).
    assert compose["secrets"] == {"worker_env": {"file": "./worker.env"},
                                  "redis_ca": {"file": f"./{config_files.WORKER_CA_FILE}"}}
    assert sorted(services) == ["worker-1", "worker-2"]
    hostnames = set()
    for service in services.values():
        assert service["environment"]["INFERQ_TORCH_THREADS"] == "1"
        assert service["restart"] == "unless-stopped"
        assert service["mem_limit"]
        # Secrets as a mounted file, never env_file (podman-compose makes env_file entries `-e` arguments).
        assert "env_file" not in service and service["secrets"] == ["worker_env", "redis_ca"]
        assert set(service["environment"]) == {"INFERQ_TORCH_THREADS"}
        # Locked down: read-only root with a tmpfs, no capability, no new privileges, the image's user.
        assert service["read_only"] is True and [t.split(":")[0] for t in service["tmpfs"]] == ["/tmp"]
        assert service["cap_drop"] == ["ALL"] and "cap_add" not in service
        assert service["security_opt"] == ["no-new-privileges:true"]
        assert service["user"] == "10001:10001"
        assert "command" not in service and "entrypoint" not in service  # the image's inferq-worker
        assert "ports" not in service  # workers only connect out, to Redis
        hostnames.add(service["hostname"])
    # The node-name scheme of deploy/nodes.py: worker-<i> has the hostname <host>-w<i>.
    host = nodes.Host("h", "worker", "", "")
    assert hostnames == {services[nodes.service(i)]["hostname"] for i in (1, 2)}
    for i in (1, 2):
        hostname = services[nodes.service(i)]["hostname"]
        assert re.sub(r"\$\{INFERQ_HOST[^}]*\}", "h", hostname) == nodes.hostname(host, i)
