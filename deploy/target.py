"""Which cluster, in which region, a provisioning command acts on: the inventory's first, then the options.

An inventory records the region and cluster tag it was made with; `down`
uses them (a cluster made in eu-west-1 is found by a plain `down`), and an
option that contradicts a live inventory is refused rather than silently
acting on another cluster.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from inferq.deploy import defaults
from inferq.deploy import inventory as inv
from inferq.deploy.aws.clients import default_region
from inferq.deploy.errors import DeployError


@dataclass(frozen=True)
class Target:
    """The cluster tag and region a command uses, and the inventory that said so (if any)."""

    cluster: str
    region: str
    inventory: inv.Inventory | None


def resolve(command: str, cluster: str | None, region: str | None, inventory_path: str) -> Target:
    """The target of `up` or `down`, from the inventory at inventory_path and the options given."""
    path = Path(inventory_path)
    known = inv.read(path) if path.exists() else None
    if known is not None and (command == "down" or known.state != inv.TORN_DOWN):
        for option, given, recorded in (("--region", region, known.region), ("--cluster", cluster, known.cluster)):
            if given and recorded and given != recorded:
                raise DeployError(f"{path} is the inventory of cluster {known.cluster} in {known.region or '?'}, "
                                  f"not {option} {given}: drop {option}, or pass --inventory with another file")
        return Target(known.cluster or cluster or defaults.CLUSTER,
                      known.region or region or default_region() or defaults.REGION, known)
    return Target(cluster or defaults.CLUSTER, region or default_region() or defaults.REGION, None)
