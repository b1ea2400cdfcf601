"""What a cluster already has, looked up by its tag (read-only), and what `up` would add to it."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from inferq.deploy import defaults
from inferq.deploy import inventory as inv
from inferq.deploy.aws import images, instances, keypairs, security_groups
from inferq.deploy.aws.tags import tag_value
from inferq.deploy.defaults import GROUP_TAG
from inferq.deploy.errors import DeployError
from inferq.deploy.options import Options

ROLES = {"worker": "workers", "orchestrator": "orchestrator"}
"""Instance role -> the role of its security group."""


@dataclass
class Survey:
    """What the cluster already has (read-only lookups), and what `up` would add."""

    key: dict | None
    vpc_id: str
    groups: dict[str, dict | None]
    instances: dict[str, dict]
    missing: list[tuple[str, str]]
    stopped: list[str]
    images: dict[str, dict] = field(default_factory=dict)
    surplus: list[str] = field(default_factory=list)
    recorded: inv.Inventory | None = None  # the inventory as `up` found it (its AMIs, launch tokens, env ...)
    protected: list[str] = field(default_factory=list)  # instances `up` gave termination protection this run

    def amis(self) -> dict[str, str]:
        """role -> AMI id to record: what was recorded, else what this run launches, else what the hosts run."""
        found = {role: i["ImageId"] for name, i in sorted(self.instances.items(), reverse=True)
                 for role in [i_role(i)] if role}
        found.update({role: image["ImageId"] for role, image in self.images.items()})
        found.update(self.recorded.amis if self.recorded else {})
        return found


def i_role(instance: dict) -> str | None:
    """An instance's role tag."""
    return tag_value(instance, defaults.ROLE_TAG_KEY)


def instance_name(instance: dict) -> str:
    """An instance's name tag; DeployError for one that carries the cluster tag but no name (not one `up` made)."""
    name = tag_value(instance, defaults.NAME_TAG_KEY)
    if name is None:
        raise DeployError(f"instance {instance['InstanceId']} carries the cluster tag but no {defaults.NAME_TAG_KEY} "
                          "tag: tag it with its name (orchestrator, worker-N) or terminate it, then run again")
    return name


def host_names(workers: int, orchestrators: tuple[str, ...] = ("orchestrator",)) -> list[tuple[str, str]]:
    """(role, name) of every instance: the orchestrators (one, or with --ha two), then worker-1..N."""
    return [("orchestrator", name) for name in orchestrators] + [("worker", f"worker-{i}")
                                                                  for i in range(1, workers + 1)]


def survey(ec2, options: Options) -> Survey:
    """Look everything up by tag; nothing is changed."""
    # Hosts the worker group launched are the group's (deploy.autoscaling), not worker-1..N.
    existing = {instance_name(i): i for i in instances.find(ec2, options.cluster) if not tag_value(i, GROUP_TAG)}
    wanted = host_names(options.workers, options.orchestrator_names)
    found = Survey(
        key=keypairs.find(ec2, options.cluster), vpc_id=security_groups.default_vpc(ec2),
        groups={role: security_groups.find(ec2, options.cluster, role) for role in ROLES.values()},
        instances=existing, missing=[(role, name) for role, name in wanted if name not in existing],
        stopped=[i["InstanceId"] for i in existing.values() if i["State"]["Name"] in ("stopped", "stopping")])
    path = Path(options.inventory)
    found.recorded = inv.read(path) if path.exists() else None
    recorded = found.amis()
    for role in sorted({role for role, _ in found.missing} | ({"worker"} if options.autoscale else set())):
        # Resolved once, then recorded: a later host boots the image its peers did.
        found.images[role] = (images.recorded_image(ec2, recorded[role], role) if role in recorded
                              else images.latest_image(ec2, *options.image(role)))
    found.surplus = sorted(set(existing) - {name for _, name in wanted})
    return found
