"""What to provision: the options of inferq-provision, read by provisioning, the survey and teardown."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from inferq.deploy import inventory as inv
from inferq.deploy import settings


@dataclass(frozen=True)
class Options:
    """What to provision (defaults in deploy.settings)."""

    cluster: str = settings.CLUSTER
    region: str = settings.REGION
    workers: int = settings.WORKERS
    orchestrator_type: str = settings.ORCHESTRATOR_TYPE
    worker_type: str = settings.WORKER_TYPE
    admin_cidr: str = ""
    api_cidr: str = settings.API_CIDR
    ami_owner: str = settings.AMI_OWNER
    ami_name: str = settings.AMI_NAME
    orchestrator_ami_owner: str = settings.ORCHESTRATOR_AMI_OWNER
    orchestrator_ami_name: str = settings.ORCHESTRATOR_AMI_NAME
    volume_gb: int = settings.ROOT_VOLUME_GB
    secrets_dir: str = settings.SECRETS_DIR
    inventory: str = settings.INVENTORY

    @property
    def key_file(self) -> Path:
        """Where the cluster's SSH private key is kept."""
        return Path(self.secrets_dir) / self.cluster / "ssh-key.pem"

    @property
    def known_hosts(self) -> Path:
        """Where the hosts' pinned SSH keys are kept: beside the inventory."""
        return inv.known_hosts_beside(self.inventory)

    def instance_type(self, role: str) -> str:
        return self.orchestrator_type if role == "orchestrator" else self.worker_type

    def image(self, role: str) -> tuple[str, str]:
        """(owner, name pattern) of the AMI for role."""
        if role == "orchestrator":
            return self.orchestrator_ami_owner, self.orchestrator_ami_name
        return self.ami_owner, self.ami_name
