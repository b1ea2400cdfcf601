"""Micro-batching on a real worker: each job gets its own result, in order, and is acknowledged after it is stored."""
from __future__ import annotations

import json

import pytest
from celery import Celery

from inferq import contract
from inferq.settings import Worker
from inferq.settings import load as load_settings
from inferq.stack import processes
from inferq.tasks.faults import SLEEP_PREFIX
from inferq.tasks.inference import classify
from inferq.tasks.model import load
from tests.conftest import start_workers

QUEUE = "inferq-batch-test"
"""A queue of its own, so the session's workers never take these jobs."""

BATCH = 4


@pytest.fixture()
def client_app(redis_server):
    app = Celery("batch-test", broker=redis_server.url, backend=redis_server.url)
    app.conf.update(task_serializer="json", accept_content=["json"], result_serializer="json",
                    result_accept_content=["json"])
    yield app
    app.close()


def _result(redis_client, job_id: str, timeout: float = 60) -> dict:
    # Read the stored result straight from Redis: AsyncResult.get would leave a
    # result subscription behind that outlives the session's Redis.
    processes.wait_until(lambda: redis_client.exists(contract.result_key(job_id)), timeout, f"result of {job_id}")
    meta = json.loads(redis_client.get(contract.result_key(job_id)))
    assert meta["status"] == "SUCCESS", meta
    return meta["result"]


def test_waiting_jobs_run_in_batches_each_with_its_own_result(client_app, redis_server, redis_client,
                                                               service_env, tiny_model, tmp_path):
    jobs = [[SLEEP_PREFIX + "2"]] + [[f"job {i} " * (i + 1), "second text", "x " * (40 - i)] for i in range(1, 9)]
    completed_before = int(redis_client.get(contract.SUCCEEDED_KEY) or 0)
    # Queued before the worker starts: it finds them all waiting, as under load.
    sent = [client_app.send_task(contract.CLASSIFY_TASK, args=[texts], queue=QUEUE) for texts in jobs]
    env = {**service_env, "INFERQ_QUEUE": QUEUE, "INFERQ_BATCH_SIZE": str(BATCH), "INFERQ_TEST_FAULTS": "1"}
    [worker] = start_workers(env, ["batcher"], redis_client, tmp_path)
    try:
        # The first batch is held by the sleeping job: its messages are taken but not acknowledged,
        # and no result is stored yet.
        processes.wait_until(lambda: redis_client.hlen(contract.UNACKED_KEY) >= BATCH, 30, "batch taken")
        assert not any(redis_client.exists(contract.result_key(r.id)) for r in sent)
        got = [_result(redis_client, r.id) for r in sent]
        # Every message is acknowledged once its result is stored (celery-batches acks after the batch returns).
        processes.wait_until(lambda: redis_client.hlen(contract.UNACKED_KEY) == 0 and redis_client.llen(QUEUE) == 0,
                             10, "all acknowledged")
        # Each batched job counts as completed in the API's metrics, as a lone job does.
        processes.wait_until(
            lambda: int(redis_client.get(contract.SUCCEEDED_KEY) or 0) - completed_before == len(jobs),
            10, "batched jobs counted")
    finally:
        processes.stop(worker)
    loaded = load(str(tiny_model), "", load_settings(Worker, {}).precision)
    for texts, result in zip(jobs, got, strict=True):
        want = classify(loaded, texts)
        assert len(result["results"]) == len(texts)
        for w, g in zip(want, result["results"], strict=True):
            for label, p in w["probabilities"].items():
                assert g["probabilities"][label] == pytest.approx(p, abs=1e-4)
    sizes = [r["worker"]["batch"] for r in got]
    assert max(sizes) > 1 and max(sizes) <= BATCH
    assert sizes[0] == BATCH  # the sleeping job's batch was full


def test_a_lone_job_is_not_held_for_a_full_batch(client_app, redis_client, service_env, tmp_path):
    env = {**service_env, "INFERQ_QUEUE": QUEUE + "-lone", "INFERQ_BATCH_SIZE": "64",
           "INFERQ_BATCH_WAIT_MS": "10"}
    [worker] = start_workers(env, ["lone"], redis_client, tmp_path)
    try:
        sent = client_app.send_task("inferq.classify", args=[["alone"]], queue=QUEUE + "-lone")
        result = _result(redis_client, sent.id)
    finally:
        processes.stop(worker)
    # Flushed by the wait bound with one job in it, not after 63 more arrived.
    assert result["worker"]["batch"] == 1
    assert len(result["results"]) == 1


def test_batches_close_before_padding_gets_too_costly():
    from inferq.tasks.inference import length_sorted_batches

    lengths = [10, 11, 12, 40, 41, 9]
    batches = length_sorted_batches(lengths, max_batch=16, max_padding=0.25)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert batches == [[5, 0, 1, 2], [3, 4]]  # the short ones together, the long ones together
    for batch in batches:
        real = sum(lengths[i] for i in batch)
        assert len(batch) * max(lengths[i] for i in batch) <= 1.25 * real
