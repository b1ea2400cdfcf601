"""With Sentinel and a replica: 202 only once the replica holds the job; without it, 503 and nothing left behind."""
from __future__ import annotations

import pytest

from inferq.api import create_app
from inferq.contract import SUBMITTED_KEY, lane_queues
from inferq.settings import Api, Failover, load
from inferq.stack.sentinel import ReplicatedRedis


@pytest.fixture(scope="module")
def group(tmp_path_factory):
    started = ReplicatedRedis(tmp_path_factory.mktemp("replicated"), load(Failover, {})).start()
    yield started
    started.stop()


@pytest.fixture()
def client(group):
    app = create_app(load(Api, {**group.env(), "INFERQ_QUEUE": "replication-test"}))
    return app.test_client()


def keys(group) -> set[bytes]:
    return set(group.current_primary().client().keys("*"))


def test_accepted_once_the_replica_holds_the_job(group, client):
    answer = client.post("/jobs", json={"text": "on two nodes"})
    assert answer.status_code == 202
    replica = group.current_replica().client()
    queue = lane_queues("replication-test")["interactive"]
    assert replica.llen(queue) >= 1  # WAIT returned: the replica has it already
    assert replica.exists(f"inferq:job:{answer.get_json()['job_id']}")


@pytest.mark.parametrize("idempotent", [False, True], ids=["plain", "idempotency-key"])
def test_no_replica_answers_503_and_leaves_nothing_behind(group, client, idempotent):
    primary = group.current_primary().client()
    queue = lane_queues("replication-test")["interactive"]
    before, depth, submitted = keys(group), primary.llen(queue), primary.get(SUBMITTED_KEY)
    replica = group.current_replica()
    replica.kill()
    headers = {"Idempotency-Key": "replication-test-key"} if idempotent else {}
    try:
        answer = client.post("/jobs", json={"text": "only on one node"}, headers=headers)
        assert answer.status_code == 503, answer.get_json()
        assert answer.get_json()["error"] == "replication_unavailable"
        assert answer.headers["Retry-After"] == "1"
        # Withdrawn: no message, no record, no count, no idempotency key (a retry gets a new job).
        assert keys(group) == before
        assert (primary.llen(queue), primary.get(SUBMITTED_KEY)) == (depth, submitted)
    finally:
        group.restart_as_replica(replica)
        group.wait_replicated()
    again = client.post("/jobs", json={"text": "on two nodes again"}, headers=headers)
    assert again.status_code == 202, again.get_json()
