"""The randomized crash checker in the suite: at least 60 faults on a seeded schedule, nothing accepted lost.

A new seed each run (printed in the figures line; INFERQ_CHECKER_SEED replays one): the property must hold
whatever the schedule, so every run samples other instants between the same kinds of fault.
"""
from __future__ import annotations

import os
import random

import pytest

from tests.figures import record
from tests.reliability.checker import Checker
from tests.reliability.replicated import workers_kept_our_transport

pytestmark = pytest.mark.slow

FAULTS = 60


@pytest.mark.timeout(1200)
def test_no_accepted_job_is_lost_or_wrong_whatever_crashes_and_whenever(tiny_model, tmp_path):
    seed = int(os.environ.get("INFERQ_CHECKER_SEED") or random.SystemRandom().randrange(2**32))
    checker = Checker(tmp_path, tiny_model, seed)
    try:
        checker.start()
        figures = checker.run(faults=FAULTS)
    finally:
        checker.stop()
    record("crash checker", **figures)
    assert figures["faults"] >= FAULTS and figures["accepted"] > 0
    assert figures["lost"] == 0, f"accepted jobs lost (replay: INFERQ_CHECKER_SEED={seed}); logs in {tmp_path}"
    assert figures["wrong"] == 0, f"wrong results stored (replay: INFERQ_CHECKER_SEED={seed}); logs in {tmp_path}"


REPLICATED_FAULTS = 20
"""Fewer than the lone Redis's: a primary's loss costs a failover (seconds) each time."""


@pytest.mark.timeout(1200)
def test_with_replication_no_accepted_job_is_lost_when_the_primary_is_killed_or_frozen(tiny_model, tmp_path):
    seed = int(os.environ.get("INFERQ_CHECKER_SEED") or random.SystemRandom().randrange(2**32))
    checker = Checker(tmp_path, tiny_model, seed, replicated=True)
    try:
        checker.start()
        figures = checker.run(faults=REPLICATED_FAULTS)
    finally:
        checker.stop()
    record("crash checker, replicated", **figures)
    workers_kept_our_transport(checker.stack)
    assert figures["faults"] >= REPLICATED_FAULTS and figures["accepted"] > 0
    assert figures["lost"] == 0, f"accepted jobs lost (replay: INFERQ_CHECKER_SEED={seed}); logs in {tmp_path}"
    assert figures["wrong"] == 0, f"wrong results stored (replay: INFERQ_CHECKER_SEED={seed}); logs in {tmp_path}"
