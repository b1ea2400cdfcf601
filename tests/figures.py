"""Figures that fault and fuzz tests measured, printed so they show in any test run.

Each test calls ``record("what", key=value, ...)``: the line goes straight to
the terminal (``sys.__stdout__``, past pytest's capture) and is repeated in the
terminal summary (``tests/conftest.py``), so CI logs carry the figures the
docs quote.
"""
from __future__ import annotations

import sys

LINES: list[str] = []
"""Every figure line recorded in this run, in order."""


def record(what: str, **figures) -> str:
    """Print and keep one line of measured figures."""
    parts = " ".join(f"{k}={round(v, 3) if isinstance(v, float) else v}" for k, v in figures.items())
    line = f"[figures] {what}: {parts}"
    LINES.append(line)
    sys.__stdout__.write("\n" + line + "\n")
    sys.__stdout__.flush()
    return line
