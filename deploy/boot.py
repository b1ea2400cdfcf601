"""A worker host of the group joins by itself (issue 22, item 2): the image and secrets from the store, no SSH.

Self-contained (the standard library and boto3 only: a new host has no inferq
installed), so the launch template's user data can carry this file as it is
(deploy/autoscaling.py's boot user data) and run it at first boot:

1. read the worker parameters (``/inferq/<cluster>/worker/``, SecureString, decrypted):
   the secrets for worker.env, ``image`` (which object, its SHA-256, the image id and
   tag) and ``compose`` (the docker-compose.yml the deploy ships);
2. download ``s3://<bucket>/images/sha256-<hex>.tar.zst`` and refuse it unless its
   bytes hash to that name;
3. ``zstd -d | docker load``, and refuse an image whose id is not the parameter's;
4. write docker-compose.yml, worker.env (mode 600, owned by the containers' uid) and
   compose's .env (the image, this host's name: its instance id), as ``fab deploy``
   writes them, and ``docker compose up -d``.

From then on the workers take jobs like any other; the drain watcher
(deploy/drain.py) sees the host out. deploy/image_store.py puts what this reads.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

WORKER_UID = 10001
"""The containers' user (deploy/defaults.py's WORKER_UID; repeated: this file stands alone)."""

IMAGE_PARAMETER, COMPOSE_PARAMETER, CA_PARAMETER = "image", "compose", "redis-ca"
CA_FILE = "redis-ca.crt"
"""The cluster's CA (public: a String parameter), written beside docker-compose.yml as the compose secret the
workers verify Redis's certificate with (config_files.WORKER_CA_FILE; a test checks the two names agree)."""
"""Parameters under the worker path that are not worker.env lines."""


class BootError(RuntimeError):
    """The host cannot join; str() says why (one line)."""


class NotPublished(BootError):
    """No image in the store yet: a host launched by `up` boots before the first `fab deploy` publishes one."""


def parameter_path(cluster: str) -> str:
    return f"/inferq/{cluster}/worker/"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def image_key(sha256: str) -> str:
    return f"images/sha256-{sha256}.tar.zst"


def read_parameters(ssm: Any, cluster: str) -> tuple[dict[str, str], dict[str, str], str, str]:
    """(worker.env's values, the image parameter, the compose file, the cluster's CA), decrypted."""
    path = parameter_path(cluster)
    pages = ssm.get_paginator("get_parameters_by_path").paginate(Path=path, WithDecryption=True)
    found = {p["Name"][len(path):]: p["Value"] for page in pages for p in page["Parameters"]}
    if IMAGE_PARAMETER not in found:
        raise NotPublished(f"no {path}{IMAGE_PARAMETER} parameter: `fab deploy` has not published an image yet")
    image = json.loads(found.pop(IMAGE_PARAMETER))
    compose, ca_pem = found.pop(COMPOSE_PARAMETER, ""), found.pop(CA_PARAMETER, "")
    return found, image, compose, ca_pem


def fetch_image(s3: Any, bucket: str, image: dict[str, str], dest: Path) -> Path:
    """Download the image the parameter names; BootError (and nothing kept) unless its bytes hash to its name."""
    s3.download_file(bucket, image["key"], str(dest))
    got = sha256_of(dest)
    if got != image["sha256"] or image["key"] != image_key(got):
        dest.unlink()
        raise BootError(f"s3://{bucket}/{image['key']} has SHA-256 {got}, not {image['sha256']}: refused, not "
                        "loaded")
    return dest


def _bare(image_id: str) -> str:
    return image_id.strip().removeprefix("sha256:")


def load_image(path: Path, engine: list[str], image: dict[str, str]) -> None:
    """zstd -d | <engine> load; BootError unless the engine then has the image id the parameter names."""
    with subprocess.Popen(["zstd", "-d", "-c", str(path)], stdout=subprocess.PIPE) as unzip:
        loaded = subprocess.run([*engine, "load"], stdin=unzip.stdout, capture_output=True, text=True)
    if unzip.returncode or loaded.returncode:
        raise BootError(f"loading {path} failed: {(loaded.stderr or loaded.stdout).strip()[-300:]}")
    have = subprocess.run([*engine, "image", "inspect", "--format", "{{.Id}}", image["tag"]], capture_output=True,
                          text=True)
    if have.returncode or _bare(have.stdout) != _bare(image["image_id"]):
        raise BootError(f"{image['tag']} is {have.stdout.strip() or 'missing'} after loading, not "
                        f"{image['image_id']}: refused")


def env_file(values: dict[str, str]) -> str:
    """KEY=value lines (deploy/config_files.py's format and its refusals)."""
    for key, value in values.items():
        if any(ch in str(value) for ch in "\n'\"$`\\ #"):
            raise BootError(f"{key} has a character env files cannot carry safely")
    return "".join(f"{key}={value}\n" for key, value in sorted(values.items()))


def write_project(directory: Path, secrets: dict[str, str], image: dict[str, str], host_name: str,
                  compose: str, ca_pem: str = "") -> None:
    """docker-compose.yml, worker.env (600, the containers' uid), the cluster's CA and .env, as `fab deploy` writes
    them."""
    directory.mkdir(parents=True, exist_ok=True)
    if compose:
        (directory / "docker-compose.yml").write_text(compose)
    worker_env = directory / "worker.env"
    worker_env.touch(mode=0o600)
    worker_env.chmod(0o600)
    worker_env.write_text(env_file(secrets))
    if os.geteuid() == 0:
        os.chown(worker_env, WORKER_UID, WORKER_UID)
    if ca_pem:
        ca_file = directory / CA_FILE
        ca_file.write_text(ca_pem)
        ca_file.chmod(0o644)
    (directory / ".env").write_text(env_file({"INFERQ_IMAGE": image["tag"], "INFERQ_HOST": host_name}))


def instance_id(imds: str = "http://169.254.169.254", timeout: float = 2.0) -> str:
    """This instance's id through IMDSv2 (a token first)."""
    import urllib.request

    put = urllib.request.Request(f"{imds}/latest/api/token", method="PUT",
                                 headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"})
    with urllib.request.urlopen(put, timeout=timeout) as answer:
        token = answer.read().decode()
    get = urllib.request.Request(f"{imds}/latest/meta-data/instance-id", headers={"X-aws-ec2-metadata-token": token})
    with urllib.request.urlopen(get, timeout=timeout) as answer:
        return answer.read().decode().strip()


def join(s3: Any, ssm: Any, cluster: str, bucket: str, directory: Path, host_name: str, engine: list[str],
         compose: list[str], report=print) -> dict[str, float]:
    """Everything above, in order; the seconds each part took."""
    started = time.monotonic()
    secrets, image, compose_text, ca_pem = read_parameters(ssm, cluster)
    directory.mkdir(parents=True, exist_ok=True)
    saved = fetch_image(s3, bucket, image, directory / "image.tar.zst")
    fetched = time.monotonic()
    report(f"fetched {image['key']} ({saved.stat().st_size} bytes), SHA-256 checked")
    load_image(saved, engine, image)
    saved.unlink()
    loaded = time.monotonic()
    report(f"loaded {image['tag']} ({image['image_id']})")
    write_project(directory, secrets, image, host_name, compose_text, ca_pem)
    up = subprocess.run([*compose, "up", "-d"], cwd=directory, capture_output=True, text=True)
    if up.returncode:
        raise BootError(f"compose up failed: {(up.stderr or up.stdout).strip()[-300:]}")
    report(f"started the workers of {host_name}")
    return {"fetch_s": fetched - started, "load_s": loaded - fetched, "join_s": time.monotonic() - started}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="inferq-boot", description=__doc__.split("\n")[0])
    p.add_argument("--cluster", required=True)
    p.add_argument("--bucket", required=True)
    p.add_argument("--region", default=None)
    p.add_argument("--dir", default="/opt/inferq", help="where the compose project goes (default %(default)s)")
    p.add_argument("--host-name", default="", help="the containers' host name (default: the instance id)")
    p.add_argument("--engine", default="docker")
    p.add_argument("--compose", default="docker compose", help="the compose command (default %(default)s)")
    p.add_argument("--wait", type=float, default=6 * 3600,
                   help="seconds to wait for a first published image (default %(default)s)")
    args = p.parse_args(argv)
    import boto3

    def report(line: str) -> None:
        print(f"inferq-boot: {line}", flush=True)

    deadline = time.monotonic() + args.wait
    while True:
        try:
            join(boto3.client("s3", region_name=args.region), boto3.client("ssm", region_name=args.region),
                 args.cluster, args.bucket, Path(args.dir), args.host_name or instance_id(),
                 shlex.split(args.engine), shlex.split(args.compose), report)
            return 0
        except NotPublished as exc:
            if time.monotonic() > deadline:
                report(str(exc))
                return 1
            report(f"{exc}; asking again in 30 s")
            time.sleep(30)
        except BootError as exc:
            report(str(exc))
            return 1


if __name__ == "__main__":
    sys.exit(main())
