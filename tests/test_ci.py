"""CI is recognised whether the service says CI=true or CI=1."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.ci import in_ci

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("TRUE", True), ("True", True), ("1", True),
                                                 ("false", False), ("0", False), ("", False), ("yes", False)])
def test_ci_is_true_or_1_in_any_case(monkeypatch, value, expected):
    monkeypatch.setenv("CI", value)
    assert in_ci() is expected


def test_ci_unset_is_not_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    assert not in_ci()


@pytest.mark.parametrize(("value", "fails"), [("true", True), ("1", True), ("TRUE", True), ("", False), ("0", False)])
def test_the_makefile_reads_ci_the_same_way(value, fails):
    # The Makefile's guard after a container engine that could not be set up: it fails the target only in CI.
    [line] = [line for line in (ROOT / "Makefile").read_text().splitlines() if "container-engine.sh ||" in line]
    guard = line.split("||", 1)[1].strip().replace("$$", "$")
    done = subprocess.run(["sh", "-c", guard], env={"CI": value, "PATH": "/usr/bin:/bin"})
    assert (done.returncode != 0) is fails
