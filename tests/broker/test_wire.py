"""broker/wire.py against what the installed Celery and kombu produce: a Celery or kombu upgrade that changes a
format inferq writes itself fails here, by name."""
from __future__ import annotations

import base64
import json
import time
import uuid
from datetime import UTC, datetime

from kombu import Connection, Queue
from kombu.transport import redis as kombu_redis

from inferq import contract
from inferq.broker import scripts, wake, wire
from inferq.stack import processes
from inferq.tasks.faults import FAIL_JOB
from tests.conftest import start_workers
from tests.events import EventLog


def _decode(raw: bytes) -> tuple[dict, list]:
    message = json.loads(raw)
    return message, json.loads(base64.b64decode(message["body"]))


def test_the_envelope_is_what_send_task_writes(celery_client, redis_client):
    queue, texts, queued_at = "wire-envelope", ["first text", "second"], time.time()
    celery_client.send_task(contract.CLASSIFY_TASK, task_id="a" * 32, queue=queue, ignore_result=True,
                         **contract.classify_message(texts, queued_at))
    redis_client.lpush(queue, wire.classify_envelope("b" * 32, texts, queued_at, queue))
    # LPUSH puts the newest at the left: ours first, then send_task's.
    (ours, our_body), (theirs, their_body) = _decode(redis_client.lpop(queue)), _decode(redis_client.lpop(queue))
    assert our_body == their_body  # args, kwargs and the embed, exactly
    assert set(ours) == set(theirs)
    assert set(ours["headers"]) == set(theirs["headers"]) | {contract.TEXTS_HEADER}
    assert ours["headers"][contract.TEXTS_HEADER] == len(texts)
    # reply_to names a result consumer of send_task's own: the API waits its own way.
    assert set(ours["properties"]) == set(theirs["properties"]) - {"reply_to"}
    for key in ("content-type", "content-encoding"):
        assert ours[key] == theirs[key]
    for key in ("task", "lang", "retries", "timelimit", "ignore_result", "argsrepr", "kwargsrepr"):
        assert ours["headers"][key] == theirs["headers"][key], key
    assert ours["headers"]["id"] == ours["headers"]["root_id"] == ours["properties"]["delivery_tag"] == "b" * 32
    for key in ("delivery_info", "priority", "body_encoding", "delivery_mode"):
        assert ours["properties"][key] == theirs["properties"][key], key
    headers, _, args, kwargs = wire.read_task(json.dumps(theirs))
    assert (headers["id"], args, kwargs) == ("a" * 32, [texts], {"queued_at": queued_at})


def test_the_callback_envelope_is_what_send_task_writes(celery_client, redis_client):
    """The API (a job cancelled while queued) and a worker (a job it finished) queue a callback delivery through
    wire.callback_envelope, not send_task: the two must stay the same message."""
    queue, job_id = "wire-callback", uuid.uuid4().hex
    celery_client.send_task(contract.DELIVER_CALLBACK_TASK, args=[job_id], queue=queue, ignore_result=True)
    redis_client.lpush(queue, wire.callback_envelope(job_id, queue))
    (ours, our_body), (theirs, their_body) = _decode(redis_client.lpop(queue)), _decode(redis_client.lpop(queue))
    assert our_body == their_body == [[job_id], {}, {"callbacks": None, "errbacks": None, "chain": None,
                                                     "chord": None}]
    assert set(ours) == set(theirs)
    assert set(ours["headers"]) == set(theirs["headers"])
    assert ours["headers"]["task"] == theirs["headers"]["task"] == contract.DELIVER_CALLBACK_TASK
    assert ours["properties"]["delivery_info"] == theirs["properties"]["delivery_info"]
    assert ours["headers"]["id"] != theirs["headers"]["id"]  # a new delivery id each time


def test_the_states_are_what_celerys_redis_backend_stores(celery_client, redis_client):
    backend = celery_client.backend
    done = datetime.now(UTC).isoformat()
    result = {"results": [], "model": {}, "started_at": 1.0, "finished_at": 2.0, "worker": {}}
    cases = {
        "success": (lambda job: backend.mark_as_done(job, result),
                    lambda job: wire.success_state(job, result, done)),
        "failure": (lambda job: backend.mark_as_failure(job, ValueError("it broke"), traceback="tb"),
                    lambda job: wire.failure_state(job, "ValueError", "it broke", "builtins", "tb", done)),
        "revoked": (lambda job: backend.mark_as_revoked(job, "cancelled"),
                    lambda job: wire.revoked_state(job, "cancelled", done)),
    }
    for name, (celerys, ours) in cases.items():
        job = uuid.uuid4().hex
        celerys(job)
        stored = wire.decode_state(redis_client.get(wire.result_key(job)))
        mine = ours(job)
        assert set(mine) <= set(stored), name
        assert {k: stored[k] for k in ("status", "traceback", "task_id")} == \
            {k: mine[k] for k in ("status", "traceback", "task_id")}, name
        assert stored["children"] in (None, [])  # a worker's task stores [], a bare backend call None
        if name != "success":
            assert stored["result"]["exc_type"] == mine["result"]["exc_type"]
            assert stored["result"]["exc_message"] == mine["result"]["exc_message"]
            assert stored["result"]["exc_module"] == mine["result"]["exc_module"]
        # What Celery's own client reads back from our state: the same status and result.
        redis_client.set(wire.result_key(job), json.dumps(mine))
        assert celery_client.AsyncResult(job).state == mine["status"], name


def test_kombus_unacked_entry_is_the_one_the_take_writes(redis_server, redis_client):
    queue = Queue("wire-unacked")
    with Connection(redis_server.url, transport=kombu_redis.Transport) as connection:
        connection.Producer(serializer="json").publish({"x": 1}, routing_key=queue.name, declare=[queue])
        raw = redis_client.lindex(queue.name, -1).decode()
        channel = connection.channel()
        received = []
        connection.Consumer(queue, channel=channel, callbacks=[lambda b, m: received.append(m)]).consume()
        connection.drain_events(timeout=5)
        tag = received[0].delivery_tag
        kombus = redis_client.hget(wire.UNACKED_KEY, tag)
        received[0].ack()
    exchange, routing_key = json.loads(raw)["properties"]["delivery_info"]["exchange"], queue.name
    assert json.loads(kombus) == json.loads(wire.unacked_entry(raw, exchange, routing_key))
    # The take writes the same entry, in Lua.
    redis_client.lpush(queue.name, raw)
    scripts.TAKE(redis_client, keys=[wire.UNACKED_KEY, wire.UNACKED_INDEX_KEY, "wire-holding", contract.WAKE_KEY,
                                     contract.MALFORMED_KEY, queue.name],
                 args=[time.time(), "first", 1, contract.CLASSIFY_TASK, contract.TEXTS_HEADER,
                       contract.DELIVERIES_KEY.format(""), 60, contract.CANCEL_KEY.format("")])
    takes = redis_client.hget(wire.UNACKED_KEY, tag)
    # Leave the session's Redis as it was: other tests count what is recorded there.
    redis_client.hdel(wire.UNACKED_KEY, tag)
    redis_client.zrem(wire.UNACKED_INDEX_KEY, tag)
    redis_client.delete("wire-holding")
    assert json.loads(takes) == json.loads(kombus)
    assert wire.read_unacked_entry(takes) == (json.loads(raw), exchange, routing_key)
    # kombu's own key names, as celeryconfig.py tells kombu to use them.
    assert (kombu_redis.Channel.unacked_key, kombu_redis.Channel.unacked_index_key,
            kombu_redis.Channel.unacked_mutex_key) == (wire.UNACKED_KEY, wire.UNACKED_INDEX_KEY,
                                                       wire.UNACKED_MUTEX_KEY)
    assert kombu_redis.Channel.keyprefix_queue == wire.BINDING_KEY.replace("{}", "%s")


def test_the_events_of_batch_mates_carry_what_celerys_own_events_do(celery_client, redis_client, service_env,
                                                                     tmp_path):
    """Celery sends the events of the job it delivered; the task sends its batch-mates' (tasks/passes.py):
    each of ours has every field Celery's of the same type has, so Flower shows both alike."""
    queue = "wire-events"
    env = {**service_env, "INFERQ_QUEUE": queue, "INFERQ_TEST_FAULTS": "1"}
    log = EventLog(celery_client)
    [worker] = start_workers(env, ["wired"], redis_client, tmp_path)
    try:
        def run(text: str) -> str:
            job_id = uuid.uuid4().hex
            wake.push(redis_client, queue, wire.classify_envelope(job_id, [text], time.time(), queue))
            processes.wait_until(lambda: redis_client.exists(wire.result_key(job_id)), 30, "its state")
            return job_id

        ok, failed = run("a fine text"), run(FAIL_JOB)
        revoked = uuid.uuid4().hex
        celery_client.control.revoke(revoked)
        processes.wait_until(lambda: f"revoked: {revoked}" in (tmp_path / "wired.log").read_text(), 10, "revoke")
        wake.push(redis_client, queue, wire.classify_envelope(revoked, ["x"], time.time(), queue))
        processes.wait_until(lambda: revoked in log.events["task-revoked"] and ok in log.events["task-succeeded"]
                             and failed in log.events["task-failed"] and ok in log.events["task-received"],
                             10, "Celery's events")
    finally:
        log.close()
        processes.stop(worker)
    headers = json.loads(wire.classify_envelope(ok, ["a fine text"], 0.0, queue))["headers"]
    ours = {"task-received": wire.received_event(headers), "task-succeeded": wire.succeeded_event([], 0.1),
            "task-failed": wire.failed_event(ValueError("x")), "task-revoked": wire.revoked_event()}
    theirs = {"task-received": log.events["task-received"][ok], "task-succeeded": log.events["task-succeeded"][ok],
              "task-failed": log.events["task-failed"][failed], "task-revoked": log.events["task-revoked"][revoked]}
    for kind, fields in ours.items():
        celerys = {k for k in theirs[kind] if k not in ("hostname", "utcoffset", "pid", "clock", "uuid",
                                                        "timestamp", "type", "local_received")}
        assert set(fields) == celerys, kind
    assert ours["task-received"]["args"] == theirs["task-received"]["args"]
    assert ours["task-received"]["name"] == theirs["task-received"]["name"]
