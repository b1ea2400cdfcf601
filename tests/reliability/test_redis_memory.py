"""Redis with a memory limit, filled with large jobs: the API says 429 before Redis refuses a write.

No worker runs while the jobs pile up, so nothing drains them; then workers
start and every job that was accepted must finish. Redis's own error
counters show whether it ever refused a write (an OOM error).
"""
from __future__ import annotations

import pytest
import requests

from inferq.stack.redis_server import RedisServer
from tests.figures import record
from tests.reliability.stack import Stack, submit

pytestmark = pytest.mark.slow

MAXMEMORY = 16 * 2**20
"""Redis's limit here: small, so a few dozen jobs fill it."""

TEXT_BYTES = 200_000
"""Each job's text: a fifth of the API's body limit, so one job alone moves Redis's memory visibly."""


def big_text(n: int) -> str:
    words = ["queue", "memory", "redis", "limit", "worker", "accepted", "never", "lost"]
    return " ".join(words[(n + i) % len(words)] for i in range(TEXT_BYTES // 6))[:TEXT_BYTES]


def test_a_full_redis_gets_429_from_the_api_and_loses_no_accepted_job(tiny_model, tmp_path):
    stack = Stack(tmp_path, tiny_model)
    stack.redis = RedisServer(tmp_path / "redis", extra_args=(f"maxmemory {MAXMEMORY}",))
    stack.start_redis()
    try:
        stack.api = stack.start_api(INFERQ_RETRY_AFTER="1")
        client = stack.client
        answers: list[requests.Response] = []
        with requests.Session() as http:
            # Until the API refuses, then a few more: each of those must be refused too (nothing drains).
            while sum(a.status_code == 429 for a in answers) < 5 and len(answers) < 400:
                answers.append(submit(http, stack.api, big_text(len(answers)), timeout=30))
        codes = [a.status_code for a in answers]
        accepted = [a.json()["job_id"] for a in answers if a.status_code == 202]
        refused = [a for a in answers if a.status_code == 429]
        memory = client.info("memory")
        errors = client.info("errorstats")
        record("redis memory limit", maxmemory_mib=MAXMEMORY / 2**20, accepted=len(accepted), refused_429=len(refused),
               used_mib=round(memory["used_memory"] / 2**20, 1), oom_errors=errors.get("errorstat_OOM", {}))
        assert set(codes) == {202, 429}, codes  # no 5xx, nothing else
        assert codes.index(429) == len(accepted) and codes[len(accepted):] == [429] * len(refused)
        assert refused[0].json()["error"] == "queue_full" and refused[0].headers["Retry-After"] == "1"
        assert "memory" in refused[0].json()["message"]
        # The API stopped before Redis did: not one write was refused for memory.
        assert "errorstat_OOM" not in errors, errors
        assert memory["used_memory"] < MAXMEMORY

        stack.start_workers(["w1", "w2"])
        states = stack.wait_done(accepted, timeout=120)
        assert all(state == "SUCCESS" for state in states.values()), states
        # Drained, Redis has room again: the API accepts.
        with requests.Session() as http:
            assert submit(http, stack.api, big_text(0), timeout=30).status_code == 202
    finally:
        stack.stop()
