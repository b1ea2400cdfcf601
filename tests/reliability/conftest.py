"""Fixtures of the fault tests: one private stack for the package (tests that break it restore it)."""
from __future__ import annotations

import pytest

from tests.reliability.stack import Stack


@pytest.fixture(scope="package")
def stack(tiny_model, tmp_path_factory):
    """Our own Redis, two workers (w1, w2) and the API, all restartable by the tests."""
    s = Stack(tmp_path_factory.mktemp("fault-stack"), tiny_model)
    s.start_redis()
    try:
        s.start_workers(["w1", "w2"])
        s.api = s.start_api()
        yield s
    finally:
        s.stop()
