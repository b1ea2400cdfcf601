"""End to end: HTTP to gunicorn, Redis, real celery workers on the tiny model."""
from __future__ import annotations

import json
import time
import uuid

import pytest

QUEUE = "inferq"


def labels_of(model_dir) -> list[str]:
    config = json.loads((model_dir / "config.json").read_text())
    return [config["id2label"][str(i)] for i in range(len(config["id2label"]))]


def submit(http, api_url, body):
    response = http.post(f"{api_url}/jobs", json=body)
    assert response.status_code == 202, response.text
    return response


def wait_done(http, api_url, job_id, seconds=20):
    response = http.get(f"{api_url}/jobs/{job_id}", params={"wait": seconds})
    assert response.status_code == 200, response.text
    return response.json()


def test_submit_one_text_and_fetch_its_result(http, api_url, tiny_model):
    response = submit(http, api_url, {"text": "the film was a delight from start to end"})
    body = response.json()
    assert body["status"] == "queued"
    assert response.headers["Location"] == f"/jobs/{body['job_id']}"

    job = wait_done(http, api_url, body["job_id"])
    assert job["status"] == "succeeded"
    [result] = job["results"]
    labels = labels_of(tiny_model)
    assert result["label"] in labels
    assert set(result["probabilities"]) == set(labels)
    assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert result["label"] == max(result["probabilities"], key=result["probabilities"].get)
    assert job["model"]["name"] == str(tiny_model)
    assert job["model"]["weights"] == "random" and "meaningless" in job["model"]["warning"]
    timings = job["timings"]
    for key in ("queued_at", "started_at", "finished_at"):
        assert timings[key]
    assert timings["queued_at"] <= timings["started_at"] <= timings["finished_at"]
    assert timings["total_ms"] >= timings["inference_ms"] >= 0


def test_bulk_job_returns_results_in_input_order(http, api_url, tiny_model):
    from inferq.model.inference import classify
    from inferq.model.loader import load
    from inferq.settings import Worker
    from inferq.settings import load as load_settings

    # Lengths deliberately out of order: the worker sorts by length to batch.
    texts = ["word " * 60, "short", "a medium length sentence here", "x " * 300, "two words"]
    job = wait_done(http, api_url, submit(http, api_url, {"texts": texts}).json()["job_id"])
    assert job["status"] == "succeeded" and job["texts"] == len(texts)
    expected = classify(load(str(tiny_model), "", load_settings(Worker, {}).precision), texts)  # the workers' default
    for got, want in zip(job["results"], expected, strict=True):
        for label, p in want["probabilities"].items():
            assert got["probabilities"][label] == pytest.approx(p, abs=1e-4)


def test_wait_returns_as_soon_as_the_job_is_done(http, api_url):
    job_id = submit(http, api_url, {"text": "quick"}).json()["job_id"]
    started = time.monotonic()
    job = wait_done(http, api_url, job_id, seconds=25)
    elapsed = time.monotonic() - started
    assert job["status"] == "succeeded"
    # A long-poll that slept its full wait would take 25 s.
    assert elapsed < 10, f"wait took {elapsed:.1f}s for a job that takes milliseconds"


def test_wait_without_result_returns_the_current_status_after_the_wait(http, api_url, redis_client):
    # A job record whose task was never queued stays "queued"; wait=1 must come back.
    job_id = uuid.uuid4().hex
    redis_client.set(f"inferq:job:{job_id}", json.dumps({"queued_at": time.time(), "texts": 1}), ex=60)
    started = time.monotonic()
    response = http.get(f"{api_url}/jobs/{job_id}", params={"wait": 1})
    assert response.json()["status"] == "queued"
    assert 0.9 <= time.monotonic() - started < 5


def test_submit_with_wait_answers_200_with_the_result_in_one_round_trip(http, api_url):
    texts = ["a bulk job waited for", "in one request"]
    response = http.post(f"{api_url}/jobs", params={"wait": 20}, json={"texts": texts})
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["status"] == "succeeded" and job["texts"] == 2 and len(job["results"]) == 2
    # The same view GET /jobs/<id> answers with.
    again = wait_done(http, api_url, job["job_id"])
    assert again["results"] == job["results"] and again["timings"] == job["timings"]
    assert job["timings"]["total_ms"] >= job["timings"]["inference_ms"] >= 0


def test_submit_with_wait_answers_202_when_the_job_is_not_done_in_time(http, service_env, redis_client, tmp_path):
    from inferq.stack import processes
    from tests.conftest import start_api

    queue = "inferq-nobody-reads"  # no worker consumes it: the job is never done
    process, base = start_api({**service_env, "INFERQ_QUEUE": queue}, tmp_path)
    try:
        started = time.monotonic()
        response = http.post(f"{base}/jobs", params={"wait": 0.5}, json={"text": "never run"})
        elapsed = time.monotonic() - started
    finally:
        processes.stop(process)
        redis_client.delete(queue)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "queued" and response.headers["Location"] == f"/jobs/{body['job_id']}"
    assert elapsed >= 0.5  # it did wait before answering


def test_submit_with_a_bad_wait_is_400_and_queues_nothing(http, api_url, redis_client):
    before = int(redis_client.get("inferq:metrics:submitted") or 0)
    for wait in ("soon", "-1", "nan"):
        response = http.post(f"{api_url}/jobs", params={"wait": wait}, json={"text": "x"})
        assert response.status_code == 400 and response.json()["error"] == "invalid_wait"
    response = http.post(f"{api_url}/jobs?wait=1&wait=2", json={"text": "x"})
    assert response.status_code == 400 and response.json()["error"] == "invalid_wait"
    assert int(redis_client.get("inferq:metrics:submitted") or 0) == before


def test_unknown_job_id_is_404(http, api_url):
    for job_id in (uuid.uuid4().hex, "not-a-job-id"):
        response = http.get(f"{api_url}/jobs/{job_id}")
        assert response.status_code == 404
        assert response.json()["error"] == "job_not_found"


def test_model_is_loaded_once_per_worker_process(http, api_url):
    ids = [submit(http, api_url, {"text": f"job number {i}"}).json()["job_id"] for i in range(10)]
    jobs_by_pid: dict[int, list[int]] = {}
    for job_id in ids:
        worker = wait_done(http, api_url, job_id)["worker"]
        assert worker["model_loads"] == 1, worker
        jobs_by_pid.setdefault(worker["pid"], []).append(worker["jobs_done"])
    # Some process ran more than one job and still loaded the model only once.
    assert max(len(done) for done in jobs_by_pid.values()) > 1


def test_healthz_and_readyz(http, api_url):
    assert http.get(f"{api_url}/healthz").json() == {"status": "ok"}
    ready = http.get(f"{api_url}/readyz")
    assert ready.status_code == 200
    assert ready.json()["workers"] >= 2
