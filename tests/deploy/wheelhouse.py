"""A local wheelhouse of what a release installs on the orchestrator (its `api` and `flower` extras).

The lab's hosts have no way out, so the release's pip install takes its
packages from here (--no-index --find-links). Made once with pip in this
machine's namespace, where the package mirrors are, and kept under .cache,
named by the files that decide its contents. pip runs under the Python the
release's venv is built with (the runtime's, /usr/bin/python3: Debian 12's
3.11.2, as on the orchestrator), not the suite's: which packages a release
needs depends on it (redis-py wants async-timeout below 3.11.3).
"""
from __future__ import annotations

import hashlib
import subprocess
import tempfile
from pathlib import Path

from inferq.deploy.release import EXTRAS
from inferq.deploy.runtime import Runtime

ROOT = Path(__file__).resolve().parents[2]


def wheelhouse() -> Path:
    """The wheelhouse directory (built on first use); the release's own package is not in it."""
    python = Runtime.python
    version = subprocess.run([python, "--version"], capture_output=True, text=True, check=True).stdout
    inputs = b"".join((ROOT / name).read_bytes() for name in ("constraints.txt", "setup.cfg", "pyproject.toml"))
    folder = ROOT / ".cache" / "wheelhouse" / hashlib.sha256(inputs + version.encode()).hexdigest()[:12]
    if (folder / ".complete").exists():
        return folder
    with tempfile.TemporaryDirectory(prefix="inferq-wheelhouse-") as scratch:
        subprocess.run([python, "-m", "venv", scratch], check=True, capture_output=True, timeout=300)
        done = subprocess.run([f"{scratch}/bin/pip", "wheel", "--quiet", "--disable-pip-version-check",
                               "--wheel-dir", str(folder), "-c", str(ROOT / "constraints.txt"),
                               f"{ROOT}[{EXTRAS}]", "setuptools", "wheel"],
                              capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"pip wheel for the lab's wheelhouse failed: {done.stderr.strip()[-500:]}")
    for own in folder.glob("inferq-*.whl"):
        own.unlink()  # the release builds itself from its own files
    (folder / ".complete").touch()
    return folder
