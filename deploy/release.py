"""A release: the project's files packed into one tarball, named by its content hash, installed in a venv of its own.

Each release under remote_dir/releases/<hash> gets its own venv, built with
the host's Python (which must be the one the pins are tested with,
deploy.settings.PYTHON_VERSION) and checked (pip check, the services' imports)
before remote_dir/current is switched to it in one rename. A release that
does not install is removed and `current` is untouched: the running services
go on with the release they run, and the previous ones stay for going back.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import shlex
import subprocess
import tarfile
from pathlib import Path

from fabric import Connection

from inferq.deploy.connections import root
from inferq.deploy.errors import DeployError
from inferq.deploy.files import upload_then
from inferq.deploy.settings import PYTHON_VERSION

EXTRAS = "api,flower"
"""What the orchestrator runs from a release: the API under gunicorn, Flower (no torch: no inference there)."""

SMOKE_IMPORTS = "import inferq.api, inferq.celery_app, inferq.deploy.remote, flower, gunicorn"
"""A release's venv must import what its services and the deploy's checks run before it becomes current."""


def package(repo: Path) -> tuple[str, bytes]:
    """(version, tar.gz bytes) of the files git knows about (tracked or not ignored)."""
    names = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=repo,
                           check=True, capture_output=True).stdout.decode().split("\0")
    buffer = io.BytesIO()
    # gzip's header carries a timestamp (tarfile's "w:gz" writes the current
    # second): fix it too, or a package made a second later is a new version.
    with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=6, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w") as tar:
        for name in sorted(n for n in names if n and (repo / n).is_file()):
            # Fixed owner and times: the same files give the same bytes, hence the same version.
            info = tar.gettarinfo(str(repo / name), arcname=name)
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mtime = 0
            with open(repo / name, "rb") as f:
                tar.addfile(info, f)
    data = buffer.getvalue()
    return hashlib.sha256(data).hexdigest()[:12], data


def install(c: Connection, remote_dir: str, version: str, data: bytes, python: str,
            pip_args: list[str] | None = None) -> bool:
    """Unpack release `version`, build and check its venv, then make it current. True if `current` changed."""
    target = f"{remote_dir}/releases/{version}"
    current = root(c, f"readlink -f {remote_dir}/current", warn=True).stdout.strip()
    if root(c, f"test -f {target}/.installed", warn=True).ok:
        if current == target:
            return False
        switch(c, remote_dir, target)  # an earlier release, still installed: back to it without a build
        return True
    require_python(c, python)
    root(c, f"rm -rf {target} && mkdir -p {target}")
    upload_then(c, data, lambda upload: f"tar -xzf {upload} -C {target}")
    pip = f"{target}/venv/bin/pip"
    options = " ".join(shlex.quote(a) for a in (pip_args or []))
    built = root(c, " && ".join([
        f"{python} -m venv {target}/venv",
        f"{pip} install --quiet --disable-pip-version-check {options} -c {target}/constraints.txt "
        f"{shlex.quote(f'{target}[{EXTRAS}]')}",
        f"{pip} check --disable-pip-version-check",
        f"{target}/venv/bin/python -c {shlex.quote(SMOKE_IMPORTS)}",
    ]), warn=True, timeout=1800)
    if built.failed:
        root(c, f"rm -rf {target}", warn=True)
        lines = [line for line in (built.stderr + built.stdout).strip().splitlines() if "is ignored" not in line]
        running = current.rsplit("/", 1)[-1] if current.startswith(f"{remote_dir}/releases/") else "none"
        raise DeployError(f"release {version} did not install on {c.host}: {(lines or ['?'])[-1].strip()}; "
                          f"it was removed, and the running release ({running}) is untouched")
    root(c, f"touch {target}/.installed")
    switch(c, remote_dir, target)
    return True


def require_python(c: Connection, python: str) -> None:
    """Refuse a host whose Python is not the one the pins are installed and tested with."""
    found = root(c, f"{python} -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])'", warn=True).stdout.strip()
    if found != PYTHON_VERSION:
        raise DeployError(f"{c.host}: {python} is {found or 'missing'}, but the pins are installed and tested with "
                          f"Python {PYTHON_VERSION}: use the Debian 12 image (--orchestrator-ami-name)")


def switch(c: Connection, remote_dir: str, target: str) -> None:
    """Point remote_dir/current at target in one rename (a service never sees it missing)."""
    root(c, f"ln -sfn {target} {remote_dir}/current.new && mv -T {remote_dir}/current.new {remote_dir}/current")


def prune(c: Connection, remote_dir: str, keep: int) -> list[str]:
    """Remove all but the newest `keep` releases under remote_dir/releases (never the current one)."""
    current = root(c, f"readlink -f {remote_dir}/current", warn=True).stdout.strip()
    listed = root(c, f"ls -1dt {remote_dir}/releases/*/ 2>/dev/null", warn=True).stdout.split()
    others = [path.rstrip("/") for path in listed if path.rstrip("/") != current]
    old = others[max(0, keep - 1):]
    if old:
        root(c, "rm -rf " + " ".join(old))
    return old
