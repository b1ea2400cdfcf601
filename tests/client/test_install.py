"""The client installs alone: a new virtual environment gets requests and tqdm, no server dependency."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVER_ONLY = {"torch", "onnxruntime", "celery", "flask", "kombu", "transformers", "gunicorn", "flower"}


@pytest.mark.slow
def test_the_client_installs_without_torch_onnxruntime_celery_or_flask(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
    # As the README says: the package with its client extra, from the checkout (a regular install, not editable).
    done = subprocess.run([*pip, "install", "--quiet", f"{ROOT}[client]"], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    listed = subprocess.run([*pip, "list", "--format=freeze"], capture_output=True, text=True, check=True)
    installed = {line.split("==")[0].lower() for line in listed.stdout.split()}
    assert "inferq" in installed and {"requests", "tqdm"} <= installed
    assert not installed & SERVER_ONLY, f"the client pulled {sorted(installed & SERVER_ONLY)}"
    helped = subprocess.run([str(venv / "bin" / "inferq"), "--help"], capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0 and "submit-file" in helped.stdout, helped.stderr
