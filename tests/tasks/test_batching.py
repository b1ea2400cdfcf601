"""Adaptive micro-batching on real workers: what waits runs together, each job keeps its own result,
failure and delivery count; a lone job runs alone at once."""
from __future__ import annotations

import json
import time
import uuid

import pytest

from inferq import contract
from inferq.broker import wake, wire
from inferq.model.inference import classify
from inferq.model.loader import load
from inferq.settings import Worker
from inferq.settings import load as load_settings
from inferq.stack import processes
from inferq.tasks.faults import FAIL_JOB, KILL_WORKER, SLEEP_PREFIX
from tests import holders
from tests.conftest import start_workers
from tests.events import EventLog

QUEUE = "inferq-batch-test"
"""Queues of their own (this name plus a suffix), so the session's workers never take these jobs."""

BATCH = 4


def _send(app, texts: list[str], queue: str):
    """A job sent with Celery's send_task: its message has no texts header, so it counts as one text."""
    return app.send_task(contract.CLASSIFY_TASK, **contract.classify_message(texts, 0.0), queue=queue).id


def _push(redis_client, texts: list[str], queue: str) -> str:
    """A job queued as the API queues it (wire.classify_envelope, with its texts header; an idle worker
    woken)."""
    job_id = uuid.uuid4().hex
    wake.push(redis_client, queue, wire.classify_envelope(job_id, texts, time.time(), queue))
    return job_id


def _state(redis_client, job_id: str, timeout: float = 60) -> dict:
    # Read the stored state straight from Redis: AsyncResult.get would leave a
    # result subscription behind that outlives the session's Redis.
    processes.wait_until(lambda: redis_client.exists(wire.result_key(job_id)), timeout, f"result of {job_id}")
    return json.loads(redis_client.get(wire.result_key(job_id)))


def _result(redis_client, job_id: str, timeout: float = 60) -> dict:
    meta = _state(redis_client, job_id, timeout)
    assert meta["status"] == "SUCCESS", meta
    return meta["result"]


def _env(service_env, queue: str, batch: int = BATCH, **extra: str) -> dict[str, str]:
    return {**service_env, "INFERQ_QUEUE": queue, "INFERQ_BATCH_SIZE": str(batch), "INFERQ_TEST_FAULTS": "1",
            **extra}


def test_waiting_jobs_run_together_each_with_its_own_result(celery_client, redis_client, service_env, tiny_model,
                                                            tmp_path):
    queue = QUEUE + "-together"
    # Batches of up to BATCH (4) texts: [1 + 1 + 2], [3 + 1], [2 + 2], [4], [1]: a job whose texts do not
    # fit waits for the next batch, at the head of the queue.
    sizes = [1, 1, 2, 3, 1, 2, 2, 4, 1]
    want_batches = [3, 3, 3, 2, 2, 2, 2, 1, 1]
    jobs = [[f"job {n} text {i} " + "x " * (3 * n + i) for i in range(size)] for n, size in enumerate(sizes)]
    jobs[0][0] = SLEEP_PREFIX + "1"
    succeeded_before = int(redis_client.get(contract.SUCCEEDED_KEY) or 0)
    # Queued before the worker starts: it finds them all waiting, as under load.
    sent = [_push(redis_client, texts, queue) for texts in jobs]
    events = EventLog(celery_client)
    [worker] = start_workers(_env(service_env, queue), ["batcher"], redis_client, tmp_path)
    try:
        got = [_result(redis_client, job_id) for job_id in sent]
        # Flower sees every job, the batch-mates included (their events go out in one publish per batch).
        ids = set(sent)
        processes.wait_until(lambda: ids <= events.succeeded and ids <= events.received, 10, "task events")
        # Every message is acknowledged once its result is stored, and none is left in the queue.
        processes.wait_until(lambda: redis_client.hlen(wire.UNACKED_KEY) == 0 and redis_client.llen(queue) == 0,
                             10, "all acknowledged")
        # Each batched job counts as succeeded in the API's metrics, as a lone job does.
        processes.wait_until(
            lambda: int(redis_client.get(contract.SUCCEEDED_KEY) or 0) - succeeded_before == len(jobs),
            10, "batched jobs counted")
    finally:
        events.close()
        processes.stop(worker)
    loaded = load(str(tiny_model), "", load_settings(Worker, {}).precision)
    for texts, result in zip(jobs, got, strict=True):
        want = classify(loaded, texts)
        assert len(result["results"]) == len(texts)
        for w, g in zip(want, result["results"], strict=True):
            for label, p in w["probabilities"].items():
                assert g["probabilities"][label] == pytest.approx(p, abs=1e-4)
    assert [r["worker"]["batch"] for r in got] == want_batches
    assert len({r["started_at"] for r in got[:3]}) == 1  # one forward pass for the first three
    # Each job was delivered once: nothing counted a second delivery for any of them.
    assert holders.deliveries(redis_client, sent) == dict.fromkeys(sent, 1)


def test_a_lone_job_runs_alone_and_at_once(celery_client, redis_client, service_env, tmp_path):
    queue = QUEUE + "-lone"
    [worker] = start_workers(_env(service_env, queue, batch=64), ["lone"], redis_client, tmp_path)
    try:
        result = _result(redis_client, _push(redis_client, ["alone"], queue))
        # A second job sent after the first finished is not batched with anything either.
        second = _result(redis_client, _push(redis_client, ["alone again"], queue))
    finally:
        processes.stop(worker)
    # Nothing else waited, and nothing is waited for: no batch timer holds a lone job.
    assert result["worker"]["batch"] == 1 and second["worker"]["batch"] == 1
    assert len(result["results"]) == 1


def test_a_failing_job_fails_alone_inside_a_batch(celery_client, redis_client, service_env, tmp_path):
    queue = QUEUE + "-fail"
    jobs = [["first"], ["ok one"], [FAIL_JOB], ["ok two"]]
    sent = [_send(celery_client, texts, queue) for texts in jobs]
    [worker] = start_workers(_env(service_env, queue), ["failer"], redis_client, tmp_path)
    try:
        states = [_state(redis_client, job_id) for job_id in sent]
        processes.wait_until(lambda: redis_client.hlen(wire.UNACKED_KEY) == 0, 10, "all acknowledged")
    finally:
        processes.stop(worker)
    assert [s["status"] for s in states] == ["SUCCESS", "SUCCESS", "FAILURE", "SUCCESS"]
    assert states[2]["result"]["exc_type"] == "InjectedFault"
    assert {s["result"]["worker"]["batch"] for s in states if s["status"] == "SUCCESS"} == {3}


def test_a_poison_job_spends_only_its_own_deliveries(celery_client, redis_client, service_env, tmp_path):
    """A job that kills its worker mid-batch: the batch comes back, every job then runs alone, the
    poison job is failed after INFERQ_MAX_DELIVERIES and its batch-mates succeed, each delivered twice."""
    queue = QUEUE + "-poison"
    max_deliveries = load_settings(Worker, {}).max_deliveries
    jobs = [["first"], ["mate one"], [KILL_WORKER], ["mate two"]]
    sent = [_send(celery_client, texts, queue) for texts in jobs]
    env = _env(service_env, queue)
    restarts = 0
    worker = None
    try:
        # Restarted under the same name each time it dies, as the stack's supervisor and a
        # container's restart policy do: it gives back what its predecessor held (tasks/recovery.py).
        while not all(redis_client.exists(wire.result_key(job_id)) for job_id in sent):
            assert restarts <= max_deliveries + 1, "the poison job was not stopped"
            # Not waiting for its heartbeat: given back the poison job first, it may die before sending one.
            worker = processes.spawn(processes.worker_command("poisoned"), env, tmp_path / f"poisoned-{restarts}.log")
            processes.wait_until(
                lambda w=worker: w.poll() is not None
                or all(redis_client.exists(wire.result_key(job_id)) for job_id in sent),
                90, "a death or all results")
            if worker.poll() is not None:
                restarts += 1
    finally:
        if worker is not None:
            processes.stop(worker)
    states = [_state(redis_client, job_id) for job_id in sent]
    assert [s["status"] for s in states] == ["SUCCESS", "SUCCESS", "FAILURE", "SUCCESS"]
    assert states[2]["result"]["exc_type"] == "PoisonJob"
    assert restarts == max_deliveries
    counts = holders.deliveries(redis_client, sent)
    assert [counts[job_id] for job_id in sent] == [2, 2, max_deliveries + 1, 2]
    # After the crash the batch-mates ran alone.
    assert all(s["result"]["worker"]["batch"] == 1 for s in states if s["status"] == "SUCCESS")


def test_batch_mates_of_a_job_celery_never_runs_are_given_back_and_run(celery_client, redis_client, service_env,
                                                                       tmp_path):
    """The take takes a batch with its first job; if Celery then drops that job without running its task
    (revoked from Flower, say), the batch-mates it took are given back before the next take, and run."""
    queue = QUEUE + "-revoked"
    [worker] = start_workers(_env(service_env, queue), ["reviver"], redis_client, tmp_path)
    log = tmp_path / "reviver.log"
    try:
        revoked = uuid.uuid4().hex
        celery_client.control.revoke(revoked)  # kept in the worker's memory: Celery will not run that job
        processes.wait_until(lambda: f"Tasks flagged as revoked: {revoked}" in log.read_text(), 10, "the revoke")
        busy = _push(redis_client, [SLEEP_PREFIX + "1"], queue)
        processes.wait_until(lambda: redis_client.hexists(wire.UNACKED_KEY, busy), 10, "the worker busy")
        wake.push(redis_client, queue, wire.classify_envelope(revoked, ["revoked"], time.time(), queue))
        mates = [_push(redis_client, [f"behind the revoked one {i}"], queue) for i in range(2)]
        results = [_result(redis_client, job_id) for job_id in mates]
        processes.wait_until(lambda: redis_client.hlen(wire.UNACKED_KEY) == 0, 10, "all acknowledged")
        log_text = log.read_text()
    finally:
        processes.stop(worker)
    assert all(len(r["results"]) == 1 for r in results)
    assert "gave back 2 job(s) taken with a job whose task did not run" in log_text
    assert not redis_client.exists(wire.result_key(revoked)) or \
        json.loads(redis_client.get(wire.result_key(revoked)))["status"] == "REVOKED"
