"""Where things are on a host (each runtime says where, deploy.runtime)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
"""The project checkout the deploy packs into releases and builds the worker image from."""

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
