"""The SSH key pair: created by EC2 once, its private key saved locally with mode 600."""
from __future__ import annotations

import os
from pathlib import Path

from inferq.deploy.aws.tags import cluster_filter, tag_spec
from inferq.deploy.errors import DeployError, aws_call


def find(ec2, cluster: str) -> dict | None:
    """The cluster's key pair, found by tag."""
    with aws_call("describing key pairs"):
        pairs = ec2.describe_key_pairs(Filters=cluster_filter(cluster, role="key"))["KeyPairs"]
    return pairs[0] if pairs else None


def create(ec2, cluster: str, name: str, private_key_path: Path) -> dict:
    """Create the key pair and write its private key (mode 600; EC2 never shows it again)."""
    with aws_call(f"creating key pair {name}"):
        pair = ec2.create_key_pair(KeyName=name, KeyType="ed25519",
                                   TagSpecifications=tag_spec("key-pair", cluster, "key", "key"))
    save_private_key(private_key_path, pair["KeyMaterial"])
    return pair


def save_private_key(path: Path, material: str) -> None:
    """Write a private key readable by its owner only, in a directory only its owner can enter."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(material if material.endswith("\n") else material + "\n")


def check_private_key(pair: dict, path: Path) -> None:
    """Refuse to go on with a key pair whose private key is not here: no host could be reached."""
    if not path.exists():
        raise DeployError(f"key pair {pair['KeyName']} exists in AWS but its private key {path} is missing; "
                          "run `inferq-provision down` (or delete the key pair) and provision again")


def delete(ec2, pair: dict) -> None:
    """Delete the key pair from EC2."""
    with aws_call(f"deleting key pair {pair['KeyName']}"):
        ec2.delete_key_pair(KeyName=pair["KeyName"])
