"""Fixtures of the security tests: one private stack for the package.

- ``secure.api``: an API publishing to a queue no worker consumes (``fuzz``), so
  the fuzz tests can read the queue length exactly (its waits are cut to 0.2 s);
- ``secure.keyed_api``: an API that requires API keys (``KEYS``);
- ``secure.callback_api``: an API with callbacks on, also on the fuzz queue;
- one worker (w1) on the ordinary queue, for the broker tests.
"""
from __future__ import annotations

import secrets

import pytest

from tests.reliability.stack import Stack

FUZZ_QUEUE = "fuzz"
KEYS = (secrets.token_urlsafe(24), secrets.token_urlsafe(24))
"""Two clients' API keys, generated per run."""


@pytest.fixture(scope="package")
def secure(tiny_model, tmp_path_factory):
    """Our Redis, one worker, and two APIs (open on the fuzz queue; keyed)."""
    s = Stack(tmp_path_factory.mktemp("security-stack"), tiny_model)
    s.start_redis()
    try:
        s.start_workers(["w1"])
        # No worker consumes the fuzz queue: a generated ?wait=N on POST /new_request
        # would hold every such request for the whole wait, so waits are cut short.
        s.api = s.start_api(INFERQ_QUEUE=FUZZ_QUEUE, INFERQ_MAX_BODY_BYTES="65536", INFERQ_MAX_WAIT_SECONDS="0.2")
        s.keyed_api = s.start_api(INFERQ_API_KEYS=",".join(KEYS))
        # Callbacks on (a secret), on the fuzz queue: callback URLs are checked, and none is ever called.
        s.callback_api = s.start_api(INFERQ_QUEUE=FUZZ_QUEUE, INFERQ_MAX_BODY_BYTES="65536",
                                     INFERQ_MAX_WAIT_SECONDS="0.2", INFERQ_WEBHOOK_SECRET=secrets.token_urlsafe(24))
        yield s
    finally:
        s.stop()
