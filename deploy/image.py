"""The worker image: built once per release on the operator's machine, shipped to each host over SSH.

Shipping is `docker save | zstd` here, once, sent through the SSH connection
the deploy already holds into `zstd -d | docker load` on each host (docs/deploy.md, "The
worker image": why not a registry). A host that already holds the image id
gets nothing; a host that loaded it must report the same id, or the deploy stops.
"""
from __future__ import annotations

import hashlib
import io
import json
import re
import shlex
import subprocess
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from fabric import Connection

from inferq.deploy import release
from inferq.deploy.connections import root
from inferq.deploy.defaults import IMAGE_NAME
from inferq.deploy.errors import DeployError
from inferq.deploy.files import put_if_changed
from inferq.deploy.layout import Report

BUILD_TIMEOUT = 3600
"""Seconds a build may take: a cold one downloads torch and every dependency."""

COMPRESS = "zstd -q -1 -T0"
"""How the archive is compressed: zstd's fastest level on every core (gzip -1 took four times as long here)."""

DECOMPRESS = "zstd -q -d"

HISTORY = 20
"""Lines of a host's image history kept (which images its workers ran, newest last)."""

CHUNK = 1 << 20
"""Bytes read from `docker save` and sent over SSH at a time."""


@dataclass(frozen=True)
class Image:
    """A built worker image: its tag and its id (the same on every host that loaded it)."""

    tag: str
    id: str

    @property
    def short(self) -> str:
        """The id as docker prints it in lists."""
        return self.id[:12]


def plain_id(raw: str) -> str:
    """An image id as docker (sha256:...) or podman (bare) prints it, without the prefix."""
    return raw.strip().removeprefix("sha256:")


def tag_for(version: str, build_args: dict[str, str]) -> str:
    """The image tag of a release built with these arguments (either changing gives a new tag)."""
    digest = hashlib.sha256(json.dumps([version, sorted(build_args.items())]).encode()).hexdigest()[:12]
    return f"{IMAGE_NAME}:{digest}"


def local_id(docker: str, tag: str) -> str | None:
    """The id of a local image, or None if there is none."""
    found = subprocess.run([*shlex.split(docker), "image", "inspect", "--format", "{{.Id}}", tag],
                           capture_output=True, text=True, timeout=60)
    return plain_id(found.stdout) if found.returncode == 0 and found.stdout.strip() else None


def build(docker: str, made: release.Release, build_args: dict[str, str], build_contexts: dict[str, str],
          report: Report) -> Image:
    """Build the release's worker image here, once: a tag already present is reused."""
    tag = tag_for(made.version, build_args)
    found = local_id(docker, tag)
    if found:
        report(f"image {tag} ({found[:12]}) already built")
        return Image(tag, found)
    options = [f"--build-arg={k}={v}" for k, v in sorted(build_args.items())]
    options += [f"--build-context={k}={v}" for k, v in sorted(build_contexts.items())]
    started = time.monotonic()
    # The context is the release itself (the commit's tracked files), never the working tree's other files.
    with tempfile.TemporaryDirectory(prefix="inferq-release-") as context:
        with tarfile.open(fileobj=io.BytesIO(made.data)) as tar:
            tar.extractall(context, filter="data")
        command = [*shlex.split(docker), "build", "-f", "worker_image/Dockerfile", "-t", tag, *options, context]
        done = subprocess.run(command, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    if done.returncode != 0:
        lines = (done.stdout + done.stderr).strip().splitlines() or [""]
        reason = next((line for line in lines if line.startswith("inferq-build:")), lines[-1])
        raise DeployError(f"building the worker image failed: {reason}")
    image = Image(tag, local_id(docker, tag) or "")
    report(f"built {tag} ({image.short}) in {time.monotonic() - started:.0f}s")
    return image


def remote_id(c: Connection, docker: str, tag: str) -> str | None:
    """The id of an image on a host, or None if it has none by that tag."""
    found = root(c, f"{docker} image inspect --format '{{{{.Id}}}}' {shlex.quote(tag)}", warn=True)
    return plain_id(found.stdout) if found.ok and found.stdout.strip() else None


class Archive:
    """The image as `docker save | zstd` writes it, made here once (on first need) for every host."""

    def __init__(self, docker: str, image: Image, directory: str):
        self.docker, self.image = docker, image
        self.path = Path(directory) / f"{image.short}.tar.zst"
        self._lock = threading.Lock()

    def ready(self) -> Path:
        """The archive's path, saving the image first if no host needed it yet."""
        with self._lock:
            if not self.path.exists():
                partial = self.path.with_suffix(".partial")
                pipeline = (f"{self.docker} save {shlex.quote(self.image.tag)} | {COMPRESS} "
                            f"> {shlex.quote(str(partial))}")
                saved = subprocess.run(["bash", "-o", "pipefail", "-c", pipeline], capture_output=True, text=True,
                                       timeout=BUILD_TIMEOUT)
                if saved.returncode != 0:
                    raise DeployError(f"`docker save {self.image.tag}` failed here: {saved.stderr.strip()[-300:]}")
                partial.rename(self.path)
        return self.path


def ship(c: Connection, docker: str, archive: Archive, image: Image) -> bool:
    """Make the host hold image (same id); return True if it had to be sent."""
    if remote_id(c, docker, image.tag) == image.id:
        return False
    load = f"{DECOMPRESS} | {docker} load"
    if c.user != "root":
        load = f"sudo -n sh -c {shlex.quote(load)}"
    c.open()
    channel = c.client.get_transport().open_session()
    try:
        channel.exec_command(load)
        with open(archive.ready(), "rb") as data:
            for chunk in iter(lambda: data.read(CHUNK), b""):
                channel.sendall(chunk)
        channel.shutdown_write()
        output = channel.makefile("rb").read() + channel.makefile_stderr("rb").read()
        loaded = channel.recv_exit_status()
    finally:
        channel.close()
    if loaded != 0:
        raise DeployError(f"on {c.host}: `docker load` of {image.tag} exited {loaded}: "
                          f"{output.decode(errors='replace').strip()[-300:]}")
    have = remote_id(c, docker, image.tag)
    if have != image.id:
        raise DeployError(f"on {c.host}: {image.tag} loaded as {have}, not {image.id}: refusing to run another image")
    return True


def prune_local(docker: str, keep: int, current: str) -> list[str]:
    """Remove all but the newest `keep` release images built here (never `current`); return the tags removed.

    Only tags the deploy made (inferq-worker:<12 hex digits>) are touched: other
    tags of the repository are someone's own. Images, not tags, are counted: two
    releases whose files build the same image share its id (and its creation
    time), and removing one of their tags must never untag the image kept.
    """
    listed = subprocess.run([*shlex.split(docker), "images", "--format",
                             "{{.Repository}}:{{.Tag}} {{.ID}} {{.CreatedAt}}"],
                            capture_output=True, text=True, timeout=60).stdout.splitlines()
    ours = [line.split(" ", 2) for line in listed
            if len(line.split(" ", 2)) == 3
            and re.fullmatch(rf"(.*/)?{IMAGE_NAME}:[0-9a-f]{{12}}", line.split(" ", 1)[0])]
    current_id = local_id(docker, current)
    kept = {plain_id(current_id)[:12]} if current_id else set()
    # Newest first: CreatedAt begins with the date and time, which sort as text.
    for _, image_id, _ in sorted(ours, key=lambda row: row[2], reverse=True):
        if len(kept - {plain_id(current_id or "")[:12]}) >= max(0, keep - 1):
            break
        kept.add(plain_id(image_id)[:12])
    old = [tag for tag, image_id, _ in ours
           if plain_id(image_id)[:12] not in kept and not same(tag, current)]
    for tag in old:
        subprocess.run([*shlex.split(docker), "rmi", tag], capture_output=True, timeout=120)
    return old


def same(tag: str, other: str) -> bool:
    """Whether two spellings name the same local tag (podman prefixes localhost/, docker may add docker.io/library/)."""
    return tag.split("/")[-1] == other.split("/")[-1]


def record(c: Connection, history: str, tag: str) -> None:
    """Note on the host that its workers now run tag (the newest line is the current image)."""
    ran = root(c, f"cat {history} 2>/dev/null", warn=True).stdout.split()
    if ran and same(ran[-1], tag):
        return
    lines = "\n".join([*ran, tag][-HISTORY:]) + "\n"
    put_if_changed(c, lines, history)


def prune(c: Connection, docker: str, history: str, keep: int) -> list[str]:
    """Remove the host's worker images but the last `keep` it ran (the current one first); return their tags."""
    kept: list[str] = []
    for tag in reversed(root(c, f"cat {history} 2>/dev/null", warn=True).stdout.split()):
        if not any(same(tag, k) for k in kept):
            kept.append(tag)
    kept = kept[:keep]
    if not kept:
        return []  # nothing ran here yet: nothing is known to be old
    listed = root(c, f"{docker} images --format '{{{{.Repository}}}}:{{{{.Tag}}}}'", warn=True).stdout.split()
    old = [tag for tag in listed
           if tag.split(":")[0].split("/")[-1] == IMAGE_NAME and not any(same(tag, k) for k in kept)]
    for tag in old:
        # An image a stopped container still uses stays; the next prune retries it.
        root(c, f"{docker} rmi {shlex.quote(tag)}", warn=True)
    return old
