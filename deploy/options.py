"""What to provision: the options of inferq-provision, read by provisioning, the survey and teardown."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from inferq.deploy import defaults
from inferq.deploy import inventory as inv

if TYPE_CHECKING:
    from inferq.deploy.autoscaling import Group


@dataclass(frozen=True)
class Options:
    """What to provision (defaults in deploy.defaults)."""

    cluster: str = defaults.CLUSTER
    region: str = defaults.REGION
    workers: int = defaults.WORKERS
    orchestrator_type: str = defaults.ORCHESTRATOR_TYPE
    worker_type: str = defaults.WORKER_TYPE
    admin_cidr: str = ""
    api_cidr: str = defaults.API_CIDR
    ami_owner: str = defaults.AMI_OWNER
    ami_name: str = defaults.AMI_NAME
    orchestrator_ami_owner: str = defaults.ORCHESTRATOR_AMI_OWNER
    orchestrator_ami_name: str = defaults.ORCHESTRATOR_AMI_NAME
    volume_gb: int = defaults.ROOT_VOLUME_GB
    secrets_dir: str = defaults.SECRETS_DIR
    inventory: str = defaults.INVENTORY
    # --min-workers/--max-workers: worker hosts in an Auto Scaling group (deploy.autoscaling), not worker-1..N
    autoscale: Group | None = None
    # --ha: two orchestrators (defaults.HA_ORCHESTRATORS), Redis replicated and watched by three Sentinels, the
    # third with a second replica on worker-1 (inventory.Inventory.standby): `workers` must then be at least 1.
    ha: bool = False

    @property
    def key_file(self) -> Path:
        """Where the cluster's SSH private key is kept."""
        return Path(self.secrets_dir) / self.cluster / "ssh-key.pem"

    @property
    def known_hosts(self) -> Path:
        """Where the hosts' pinned SSH keys are kept: beside the inventory."""
        return inv.known_hosts_beside(self.inventory)

    @property
    def orchestrator_names(self) -> tuple[str, ...]:
        """The orchestrator instances' names: one, or with --ha two (the first starts as Redis's primary)."""
        return defaults.HA_ORCHESTRATORS if self.ha else ("orchestrator",)

    def instance_type(self, role: str) -> str:
        return self.orchestrator_type if role == "orchestrator" else self.worker_type

    def image(self, role: str) -> tuple[str, str]:
        """(owner, name pattern) of the AMI for role."""
        if role == "orchestrator":
            return self.orchestrator_ami_owner, self.orchestrator_ami_name
        return self.ami_owner, self.ami_name
