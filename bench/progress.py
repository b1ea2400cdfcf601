"""The benchmark's progress bar."""
from __future__ import annotations

import sys

from tqdm import tqdm


class Progress:
    """One progress bar over the run's steps, with the current stage as its description."""

    def __init__(self, total: int):
        self.bar = tqdm(total=total, unit="step", file=sys.stderr, dynamic_ncols=True)

    def stage(self, name: str) -> None:
        self.bar.set_description(name)

    def __call__(self, n: int = 1) -> None:
        self.bar.update(n)

    def close(self) -> None:
        self.bar.close()
