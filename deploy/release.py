"""A release: the project's files packed into one tarball, named by its content hash (AWS hosts only)."""
from __future__ import annotations

import gzip
import hashlib
import io
import subprocess
import tarfile
from pathlib import Path

from fabric import Connection

from inferq.deploy.connections import root
from inferq.deploy.files import upload_then

PYTORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
"""Where pip finds torch 2.13.0's CPU build (constraints.txt pins torch==2.13.0+cpu)."""


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


def install(c: Connection, remote_dir: str, version: str, data: bytes, with_venv: bool) -> bool:
    """Unpack the release under remote_dir/releases (and pip-install it into remote_dir/venv); True if new."""
    target = f"{remote_dir}/releases/{version}"
    if root(c, f"test -f {target}/.installed", warn=True).ok:
        return False
    upload_then(c, data, lambda upload: f"mkdir -p {target} && tar -xzf {upload} -C {target}")
    if with_venv:
        root(c, f"test -x {remote_dir}/venv/bin/python || python3 -m venv {remote_dir}/venv")
        root(c, f"{remote_dir}/venv/bin/pip install --quiet --extra-index-url {PYTORCH_CPU_INDEX} "
                f"-c {target}/constraints.txt {target}", timeout=1800)
    root(c, f"ln -sfn {target} {remote_dir}/current && touch {target}/.installed")
    return True


def prune(c: Connection, remote_dir: str, keep: int) -> list[str]:
    """Remove all but the newest `keep` releases under remote_dir/releases (never the current one)."""
    current = root(c, f"readlink -f {remote_dir}/current", warn=True).stdout.strip()
    listed = root(c, f"ls -1dt {remote_dir}/releases/*/ 2>/dev/null", warn=True).stdout.split()
    others = [path.rstrip("/") for path in listed if path.rstrip("/") != current]
    old = others[max(0, keep - 1):]
    if old:
        root(c, "rm -rf " + " ".join(old))
    return old
