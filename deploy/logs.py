"""The deploy tools' log records (retries, mostly) on stdout, beside their progress lines.

stderr stays for the one line a failure ends with; libraries' own loggers
(paramiko, botocore) stay quiet.
"""
from __future__ import annotations

import logging
import sys

LOGGER = "inferq.deploy"


def to_stdout() -> None:
    """Print inferq.deploy's records of level INFO and up as plain lines on stdout (once per process)."""
    logger = logging.getLogger(LOGGER)
    if any(getattr(h, "inferq_stdout", False) for h in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.inferq_stdout = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
