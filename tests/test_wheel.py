"""inferq as a wheel: built from this checkout, installed where an installed package lives, and run from there.

A wheel install puts the package in site-packages: its defaults must keep state and model caches in the
user's folders, never beside the installed code. The dependencies are this environment's (a new venv would
install torch again): the wheel alone goes into a directory of its own, first on the path of the base
interpreter, with this environment's site-packages after it as a plain path (so the checkout's editable
install, a .pth hook of that environment, is not loaded).
"""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def _files(directory: Path) -> set[Path]:
    return {p for p in directory.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def test_a_wheel_install_builds_and_loads_the_model_and_runs_the_cli_outside_its_package(tmp_path):
    dist, target, home = tmp_path / "dist", tmp_path / "site", tmp_path / "home"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                            "--wheel-dir", str(dist), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    [wheel] = dist.glob("inferq-*.whl")
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
                                str(target), str(wheel)], capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr[-2000:]
    package = target / "inferq"
    assert (package / "model" / "data" / "corpus.txt.gz").is_file()  # the tokenizer's corpus ships
    before = _files(package)
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "REDIS_URL": "redis://127.0.0.1:1/0",
           "INFERQ_MODEL": "offline:tiny", "INFERQ_PRECISION": "onnx-int8",
           # The wheel first, then this environment's dependencies (not its editable inferq).
           "PYTHONPATH": os.pathsep.join([str(target), sysconfig.get_paths()["purelib"]]), "PYTHONNOUSERSITE": "1"}
    probe = ("import inferq.settings as s\n"
             "from inferq.tasks.worker import load_model\n"
             "loaded = load_model()\n"
             "print(s.__file__)\n"
             "print(s.current(s.ModelSource).cache)\n"
             "print(s.current(s.Stack).state_dir)\n"
             "print(loaded.info['name'], loaded.labels)\n")
    python = getattr(sys, "_base_executable", sys.executable)
    done = subprocess.run([python, "-c", probe], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    module, cache, state, model = done.stdout.strip().splitlines()[-4:]
    assert Path(module).is_relative_to(package), "the probe did not run the wheel's code"
    assert Path(cache) == home / ".cache" / "inferq" / "models" and (Path(cache) / "offline-tiny").is_dir()
    assert Path(state) == home / ".local" / "state" / "inferq"
    assert model.startswith("offline:tiny ")
    cli = subprocess.run([python, "-m", "inferq.client.cli", "--help"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert cli.returncode == 0 and "submit-file" in cli.stdout, cli.stderr
    assert _files(package) == before, "running the installed package wrote into it"
