"""Write worker_image/requirements.lock: what the worker image's runtime stage installs, pinned and hashed.

    python worker_image/lock.py          # rewrite the lock (asks PyPI which files; installs nothing)
    python worker_image/lock.py --check  # exit 1 if the lock no longer matches setup.cfg and constraints.txt

The runtime stage installs with ``pip install --require-hashes``: every package,
dependencies included, at the version constraints.txt pins, from the one file
whose SHA-256 is written here. The list is the package's own requirements and
its ``worker`` extra without EXPORT_ONLY, the tools only the build stage's ONNX
export needs. Run it after changing constraints.txt or the worker extra.
"""
from __future__ import annotations

import configparser
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "worker_image" / "requirements.lock"

EXPORT_ONLY = {"torch", "transformers", "safetensors", "onnx"}
"""The worker extra's packages the ONNX runtime never imports: they stay in the build stage."""

IMAGE_PYTHON = "/usr/bin/python3"
"""Debian 12's Python (3.11.2), the oldest the image may have (the local base is Debian's; python:3.11-slim's is
newer): resolving under it keeps what older 3.11s need (redis-py wants async-timeout below 3.11.3)."""

HEADER = ("# The worker image's runtime packages, installed with --require-hashes (worker_image/Dockerfile).\n"
          "# Written by `python worker_image/lock.py`; `--check` says when it is stale. Do not edit by hand.\n")


def name_of(requirement: str) -> str:
    """The normalized project name of a requirement line ("celery[redis]>=5.4" -> "celery")."""
    return re.split(r"[\[<>=!~; ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def runtime_requirements() -> list[str]:
    """setup.cfg's install_requires and worker extra, without EXPORT_ONLY."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    lines = cfg["options"]["install_requires"].split("\n") + cfg["options.extras_require"]["worker"].split("\n")
    return [line.strip() for line in lines if line.strip() and name_of(line) not in EXPORT_ONLY]


def resolve(requirements: list[str]) -> list[tuple[str, str, str]]:
    """(name, version, sha256) of every package pip would install for requirements, from PyPI alone."""
    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run([IMAGE_PYTHON, "-m", "venv", f"{scratch}/venv"], check=True, timeout=300)
        wanted = Path(scratch) / "requirements.in"
        wanted.write_text("\n".join(requirements) + "\n")
        report = Path(scratch) / "report.json"
        # --isolated and no config file: this machine's local indexes must not decide what PyPI serves the build.
        env = {**os.environ, "PIP_CONFIG_FILE": os.devnull}
        # Resolved by the image's Python, not this one: environment markers differ between them.
        subprocess.run([f"{scratch}/venv/bin/python", "-m", "pip", "install", "--isolated", "--quiet", "--dry-run",
                        "--ignore-installed", "--only-binary=:all:", "--report", str(report),
                        "-c", str(ROOT / "constraints.txt"), "-r", str(wanted)], check=True, env=env, timeout=600)
        installed = json.loads(report.read_text())["install"]
    return sorted((item["metadata"]["name"].lower().replace("_", "-"), item["metadata"]["version"],
                   item["download_info"]["archive_info"]["hashes"]["sha256"]) for item in installed)


def render(packages: list[tuple[str, str, str]]) -> str:
    """The lock file's text."""
    return HEADER + "".join(f"{name}=={version} \\\n    --hash=sha256:{digest}\n" for name, version, digest in packages)


def pinned(text: str) -> dict[str, str]:
    """name -> version of a lock's (or constraints file's) `name==version` lines."""
    return {name_of(m.group(1)): m.group(2) for m in re.finditer(r"^([A-Za-z0-9_.\-\[\]]+)==(\S+)", text, re.M)}


def stale() -> list[str]:
    """Why the lock does not match setup.cfg and constraints.txt (empty: it does)."""
    locked = pinned(LOCK.read_text())
    constraints = pinned((ROOT / "constraints.txt").read_text())
    problems = [f"{name} is locked at {version} but constraints.txt pins {constraints[name]}"
                for name, version in locked.items() if name in constraints and constraints[name] != version]
    problems += [f"{name_of(r)} is required but not locked" for r in runtime_requirements()
                 if name_of(r) not in locked]
    problems += [f"{name} is locked but only the build stage may have it" for name in locked if name in EXPORT_ONLY]
    return problems


def main(argv: list[str]) -> int:
    """Rewrite the lock, or check it."""
    if argv == ["--check"]:
        problems = stale()
        for problem in problems:
            print(f"worker_image/requirements.lock: {problem}; run `python worker_image/lock.py`")
        return 1 if problems else 0
    LOCK.write_text(render(resolve(runtime_requirements())))
    print(f"wrote {LOCK.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
