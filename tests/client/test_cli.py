"""The inferq command-line client against the real API (gunicorn + workers from tests/conftest.py)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from inferq.stack.processes import BIN
from inferq.stack.redis_server import free_port


def inferq(*args: str, api: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """Run the console script as a user would."""
    return subprocess.run([str(BIN / "inferq"), "--api", api, *args], capture_output=True, text=True,
                          timeout=90, input=stdin)


def test_client_imports_neither_flask_nor_torch():
    code = ("import sys; from client import cli; cli.parser(); "
            "print(sorted(m for m in ('flask', 'torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("args", [("status", "0" * 32), ("submit", "hello"), ("result", "0" * 32, "--wait", "1")])
def test_unreachable_api_is_one_line_not_a_traceback(args):
    run = inferq(*args, api=f"http://127.0.0.1:{free_port()}")
    assert run.returncode == 3
    assert "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach the API" in lines[0] and "connection refused" in lines[0]


def test_submit_prints_the_job_id_then_status_and_result(api_url):
    submitted = inferq("submit", "a plain sentence", api=api_url)
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    assert len(job_id) == 32
    result = inferq("result", job_id, "--wait", "30", api=api_url)
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["job_id"] == job_id and body["status"] == "succeeded"
    assert set(body["results"][0]["probabilities"]) == {"NEGATIVE", "POSITIVE"}
    status = inferq("status", job_id, api=api_url)
    assert status.stdout.split() == [job_id, "succeeded"]


def test_submit_wait_prints_the_result(api_url):
    run = inferq("submit", "wait for me", "--wait", "30", api=api_url)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["status"] == "succeeded"


def test_submit_file_sends_bulk_jobs_and_writes_json_lines_in_input_order(api_url, tmp_path, tiny_model):
    from inferq.model.inference import classify
    from inferq.model.loader import load
    from inferq.settings import Worker
    from inferq.settings import load as load_settings

    # Lengths out of order: the worker sorts a job's texts by length; the output must not be.
    texts = [f"text number {i} of the file " + "padding " * ((7 * i) % 11) for i in range(12)]
    source = tmp_path / "texts.txt"
    source.write_text("\n".join(texts[:6]) + "\n\n" + "\n".join(texts[6:]) + "\n")
    run = inferq("submit-file", str(source), "--concurrency", "2", api=api_url)
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    assert [line["text"] for line in lines] == texts
    assert [line["line"] for line in lines] == [*range(1, 7), *range(8, 14)]
    # Bulk jobs up to the API's limit (INFERQ_MAX_TEXTS=8 in the tests, read from /openapi.json).
    job_ids = [line["job_id"] for line in lines]
    assert job_ids == [job_ids[0]] * 8 + [job_ids[8]] * 4 and job_ids[0] != job_ids[8]
    assert "12 texts in 2 jobs: 12 succeeded" in run.stderr
    assert "100%" in run.stderr and "text" in run.stderr  # progress in texts, on stderr, never in the JSON lines
    # Each line carries its own text's result.
    loaded = load(str(tiny_model), "", load_settings(Worker, {}).precision)
    for line, want in zip(lines, classify(loaded, texts), strict=True):
        assert line["label"] == want["label"]
        for label, p in want["probabilities"].items():
            assert line["probabilities"][label] == pytest.approx(p, abs=1e-4)
    smaller = inferq("submit-file", str(source), "--texts-per-job", "5", "-q", api=api_url)
    assert smaller.returncode == 0, smaller.stderr
    assert "12 texts in 3 jobs: 12 succeeded" in smaller.stderr
    assert [json.loads(line)["text"] for line in smaller.stdout.splitlines()] == texts


def test_unknown_job_and_refused_input_are_one_line(api_url, tmp_path):
    missing = inferq("status", "f" * 32, api=api_url)
    assert missing.returncode == 1
    assert missing.stderr.strip() == (
        f"inferq: the API refused: 404 job_not_found: no job {'f' * 32}: never issued, or its result expired")
    empty = inferq("submit", "   ", api=api_url)
    assert empty.returncode == 1 and "400" in empty.stderr and "Traceback" not in empty.stderr
    nofile = inferq("submit-file", str(tmp_path / "absent.txt"), api=api_url)
    assert nofile.returncode == 1 and "No such file" in nofile.stderr and "Traceback" not in nofile.stderr
