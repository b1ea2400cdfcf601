"""A release: a commit's tracked files in one tarball, named by its content hash, installed in a venv of its own.

Each release under remote_dir/releases/<hash> gets its own venv, built with
the host's Python (which must be the one the pins are tested with,
deploy.defaults.PYTHON_VERSION) and checked (pip check, the services' imports)
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
from dataclasses import dataclass
from pathlib import Path

from fabric import Connection

from inferq.deploy.connections import root
from inferq.deploy.defaults import PYTHON_VERSION
from inferq.deploy.errors import DeployError
from inferq.deploy.files import upload_then

EXTRAS = "api,flower"
"""What the orchestrator runs from a release: the API under gunicorn, Flower (no torch: no inference there)."""

GROUP_EXTRAS = EXTRAS + ",autoscale"
"""With a worker Auto Scaling group, also boto3: the orchestrator publishes the backlog (inferq-backlog-metrics)."""

SMOKE_IMPORTS = "import inferq.api, inferq.celery_app, inferq.deploy.remote, flower, gunicorn"
"""A release's venv must import what its services and the deploy's checks run before it becomes current."""


@dataclass(frozen=True)
class Release:
    """What a deploy ships: HEAD's tracked files (and, only when allowed, their uncommitted changes) as a tarball."""

    version: str  # the tarball's hash; "-dirty" appended when it holds uncommitted changes
    data: bytes
    commit: str
    dirty: tuple[str, ...] = ()  # tracked files that differ from the commit

    def file(self, name: str) -> bytes:
        """One file of the release, as it ships (the compose file the worker hosts run, say)."""
        with tarfile.open(fileobj=io.BytesIO(self.data)) as tar:
            member = tar.extractfile(name)
            if member is None:
                raise DeployError(f"release {self.version} has no file {name}")
            return member.read()

    def describe(self) -> str:
        """One line for the operator: which commit, and whether (and how) it differs from it."""
        base = f"release {self.version} (commit {self.commit[:12]}"
        return base + (f", dirty: {', '.join(self.dirty)})" if self.dirty else ")")


def git(repo: Path, *args: str) -> bytes:
    """Run git in repo; its stdout; a DeployError naming the command if it fails (not a repository, say)."""
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, timeout=120)
    if done.returncode != 0:
        raise DeployError(f"`git {' '.join(args)}` failed in {repo}: {done.stderr.decode(errors='replace').strip()}; "
                          "a release is a commit of a git checkout")
    return done.stdout


def uncommitted(repo: Path) -> list[str]:
    """Tracked files whose content differs from HEAD (staged or not); untracked files never count: they never ship."""
    entries = git(repo, "status", "--porcelain=v1", "-z", "--untracked-files=no").decode().split("\0")
    names, skip = [], False
    for entry in entries:
        if skip or not entry:
            skip = False
            continue
        names.append(entry[3:])
        skip = entry[0] in "RC"  # a rename or copy is followed by its old name
    return sorted(names)


def package(repo: Path, allow_dirty: bool = False) -> Release:
    """HEAD's tracked files as a deterministic tar.gz; uncommitted changes refused unless allow_dirty.

    git archive reads the files from git's objects, so nothing in the work tree
    that git does not track (a log, an editor's backup, a .env) can ever ship.
    With allow_dirty, `git stash create` makes a commit of the tracked files as
    they are now (no ref, no change to the work tree) and that is archived.
    """
    commit = git(repo, "rev-parse", "HEAD").decode().strip()
    dirty = uncommitted(repo)
    if dirty and not allow_dirty:
        shown = ", ".join(dirty[:8]) + (f" and {len(dirty) - 8} more" if len(dirty) > 8 else "")
        raise DeployError(f"uncommitted changes to tracked files: {shown}; a release is a commit: commit them, or "
                          "pass --allow-dirty to ship the tracked files as they are, marked dirty")
    source = commit
    if dirty:
        source = git(repo, "-c", "user.name=inferq", "-c", "user.email=inferq@localhost", "stash", "create") \
            .decode().strip() or commit
    archived = tarfile.open(fileobj=io.BytesIO(git(repo, "archive", "--format=tar", source)))
    buffer = io.BytesIO()
    # Fixed owner and times, and gzip's own timestamp fixed too (tarfile's "w:gz" writes the current
    # second): the same files give the same bytes, hence the same version. git archive's header
    # naming the commit is left out, so two commits of the same files are one release.
    with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=6, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for member in sorted(archived.getmembers(), key=lambda m: m.name):
            if not member.isfile():
                continue  # directories are made by tar -x; symlinks: the project has none to ship
            member.mtime, member.uid, member.gid, member.uname, member.gname = 0, 0, 0, "root", "root"
            tar.addfile(member, archived.extractfile(member))
    data = buffer.getvalue()
    version = hashlib.sha256(data).hexdigest()[:12] + ("-dirty" if dirty else "")
    return Release(version, data, commit, tuple(dirty))


def install(c: Connection, remote_dir: str, version: str, data: bytes, python: str,
            pip_args: list[str] | None = None, extras: str = EXTRAS) -> bool:
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
        f"{shlex.quote(f'{target}[{extras}]')}",
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
