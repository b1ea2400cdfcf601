"""The take script against a real Redis: what it takes, in which order, what it records, and what it leaves."""
from __future__ import annotations

import json
import time
import uuid

import pytest
import redis as redis_py

from inferq import contract
from inferq.broker import scripts, wire
from inferq.stack.redis_server import RedisServer

LANES = ["lane", "lane.bulk"]
HOLDING = contract.HOLDING_KEY.format("tester@host")


@pytest.fixture
def client(tmp_path):
    server = RedisServer(tmp_path / "redis", appendonly=False, extra_args=("maxmemory 16mb",)).start()
    yield server.client()
    server.stop()


def message(texts: int = 1, task: str = contract.CLASSIFY_TASK, redelivered: bool = False, lane: str = LANES[0]) -> str:
    job_id = uuid.uuid4().hex
    raw = json.loads(wire.classify_envelope(job_id, ["t"] * texts, time.time(), lane))
    raw["headers"]["task"] = task
    if redelivered:
        raw["headers"]["redelivered"] = True
    return json.dumps(raw)


def tag_of(raw: str | bytes) -> str:
    return json.loads(raw)["properties"]["delivery_tag"]


def take_with_marks(client, mode: str = "first", room: int = 0, lanes=LANES):
    count, more, lane, *rest = scripts.TAKE(
        client, keys=[wire.UNACKED_KEY, wire.UNACKED_INDEX_KEY, HOLDING, contract.WAKE_KEY,
                      contract.MALFORMED_KEY, *lanes],
        args=[time.time(), mode, room, contract.CLASSIFY_TASK, contract.TEXTS_HEADER,
              contract.DELIVERIES_KEY.format(""), 60, contract.CANCEL_KEY.format("")])
    taken, marks = rest[:len(rest) // 2], rest[len(rest) // 2:]
    return count, more, lane.decode(), [raw.decode() for raw in taken], marks


def take(client, mode: str = "first", room: int = 0, lanes=LANES):
    return take_with_marks(client, mode, room, lanes)[:4]


def test_takes_the_oldest_of_the_first_lane_and_records_it_in_the_same_step(client):
    old, new, bulk = message(), message(), message(3, lane=LANES[1])
    client.lpush(LANES[1], bulk)
    client.lpush(LANES[0], old)
    client.lpush(LANES[0], new)
    count, more, lane, taken = take(client)
    assert (count, more, lane, taken) == (1, 1, LANES[0], [old])
    entry = json.loads(client.hget(wire.UNACKED_KEY, tag_of(old)))
    assert entry == [json.loads(old), "", LANES[0]]  # kombu's layout: [message, exchange, routing key]
    assert client.zscore(wire.UNACKED_INDEX_KEY, tag_of(old)) == pytest.approx(time.time(), abs=5)
    assert client.smembers(HOLDING) == {tag_of(old).encode()}  # its expiry is the worker's (Holdings.keep)
    assert client.lrange(LANES[0], 0, -1) == [new.encode()]
    # The interactive lane first, then the bulk lane.
    assert take(client)[3] == [new]
    assert take(client)[2:] == (LANES[1], [bulk])
    assert take(client) == (0, 0, "", [])


def test_mates_fill_the_room_in_lane_order_and_the_first_that_does_not_fit_stays(client):
    jobs = [message(1), message(2), message(3), message(1)]
    for raw in jobs:
        client.lpush(LANES[0], raw)
    _, more, _, taken = take(client, room=4)  # room: the first counts in it
    assert taken == jobs[:2] and more == 1
    assert client.lrange(LANES[0], 0, -1) == [raw.encode() for raw in reversed(jobs[2:])]
    assert client.hlen(wire.UNACKED_KEY) == 2 and client.scard(HOLDING) == 2
    # Mates only: what fits in the room, nothing else.
    assert take(client, mode="mates", room=2)[3] == []
    assert take(client, mode="mates", room=3)[3] == [jobs[2]]


def test_a_redelivery_is_counted_runs_alone_and_is_never_a_mate(client):
    again, fresh = message(redelivered=True), message()
    client.lpush(LANES[0], again)
    client.lpush(LANES[0], fresh)
    job_id = json.loads(again)["headers"]["id"]
    count, _, _, taken = take(client, room=16)
    assert count == 2 and taken == [again]  # its first delivery wrote nothing; it takes no mates
    assert int(client.get(contract.DELIVERIES_KEY.format(job_id))) == 2
    assert take(client, room=16)[:1] + (take(client)[0],) == (1, 0)  # fresh, then nothing
    client.lpush(LANES[0], again)
    assert take(client, room=16)[0] == 3
    # As a would-be mate, a redelivery stays at the head of its lane.
    client.lpush(LANES[0], fresh)
    client.lpush(LANES[0], again)
    assert take(client, room=16)[3] == [fresh]
    assert client.lrange(LANES[0], 0, -1) == [again.encode()]


def test_other_tasks_are_taken_first_but_never_batched(client):
    callback = message(task=contract.DELIVER_CALLBACK_TASK)
    job = message()
    client.lpush(LANES[0], callback)
    client.lpush(LANES[0], job)
    assert take(client, room=16)[3] == [callback]
    assert take(client, room=16)[3] == [job]
    client.lpush(LANES[0], callback)
    assert take(client, mode="mates", room=16)[3] == []


def test_unreadable_messages_are_set_aside_never_dropped_never_run(client):
    good = message()
    for raw in ("not json", json.dumps({"headers": {}}), good):
        client.lpush(LANES[0], raw)
    assert take(client, room=16)[3] == [good]
    assert client.lrange(contract.MALFORMED_KEY, 0, -1) == [json.dumps({"headers": {}}).encode(), b"not json"]


def test_wake_ups_are_passed_on_while_work_is_left_and_cleared_when_none_is(client):
    for _ in range(3):
        client.lpush(LANES[1], message(lane=LANES[1]))
    take(client)
    assert client.llen(contract.WAKE_KEY) == 1  # work left: one more idle worker is woken
    take(client)
    assert client.llen(contract.WAKE_KEY) == 1  # still one, not one per take
    take(client)
    assert client.llen(contract.WAKE_KEY) == 0  # nothing left: no wake-up would find anything
    client.rpush(contract.WAKE_KEY, 1)
    assert take(client)[0] == 0 and client.llen(contract.WAKE_KEY) == 0


def test_at_maxmemory_the_take_is_refused_before_anything_leaves_its_lane(client):
    raw = message()
    client.lpush(LANES[0], raw)
    client.config_set("maxmemory", "1")  # every write that may grow memory is now refused
    try:
        with pytest.raises(redis_py.ResponseError, match="maxmemory"):
            take(client)
    finally:
        client.config_set("maxmemory", "16mb")
    assert client.lrange(LANES[0], 0, -1) == [raw.encode()] and client.hlen(wire.UNACKED_KEY) == 0
    assert take(client)[3] == [raw]


def test_the_script_is_sent_in_full_once_redis_has_forgotten_it(client):
    client.lpush(LANES[0], message())
    client.script_flush()
    assert len(take(client)[3]) == 1
    assert client.script_exists(scripts.TAKE.sha) == [True]


def test_cancel_sees_a_taken_job_as_running(client):
    raw = message()
    job_id = json.loads(raw)["headers"]["id"]
    client.lpush(LANES[0], raw)

    def cancel(job):
        keys = [wire.result_key(job), wire.UNACKED_KEY, contract.CANCEL_KEY.format(job), contract.CANCELLED_KEY]
        return scripts.CANCEL(client, keys=keys, args=[60, "{}", job])[0].decode()

    take(client)
    assert cancel(job_id) == "running"
    assert cancel(job_id) == "marked"  # asked before: its worker discards the result
    other = json.loads(message())["headers"]["id"]
    assert cancel(other) == "queued"
    assert cancel(other) == "final"  # its REVOKED state is stored


def test_the_take_reads_the_cancel_marks_of_what_it_takes(client):
    jobs = [message(), message(), message()]
    for raw in jobs:
        client.lpush(LANES[0], raw)
    cancelled = json.loads(jobs[1])["headers"]["id"]
    client.set(contract.CANCEL_KEY.format(cancelled), "queued")
    *_, taken, marks = take_with_marks(client, room=16)
    assert taken == jobs and marks == [None, b"queued", None]
