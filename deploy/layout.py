"""Where things are on a host, per runtime."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from inferq.deploy.inventory import Host, Inventory

REPO = Path(__file__).resolve().parent.parent
"""The project checkout the deploy ships (AWS) or that the hosts share (process runtime)."""

Report = Callable[[str], None]


@dataclass(frozen=True)
class Layout:
    """Where things are on one host."""

    remote_dir: str
    python: str  # a virtual environment with inferq installed
    code: str  # the project directory services run in

    @property
    def bin(self) -> str:
        return f"{self.python}/bin"


def layout(inventory: Inventory, host: Host) -> Layout:
    """AWS hosts get a venv and the release under remote_dir; process hosts use the shared checkout."""
    if inventory.runtime == "process":
        return Layout(host.remote_dir, inventory.python, inventory.code_dir)
    return Layout(host.remote_dir, f"{host.remote_dir}/venv", f"{host.remote_dir}/current")
