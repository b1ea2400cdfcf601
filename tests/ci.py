"""Whether the tests run in CI, where a check that cannot run must fail instead of skipping."""
from __future__ import annotations

import os

CI_VALUES = ("true", "1")
"""What CI services set CI to: GitHub Actions, GitLab and most say "true", some (and people) say "1"."""


def in_ci() -> bool:
    """CI is set to true or 1, in any case."""
    return os.environ.get("CI", "").strip().lower() in CI_VALUES
