"""Priority lanes against real workers: single texts overtake queued bulk work; admission counts per lane."""
from __future__ import annotations

import requests

from inferq.bench.priority import interactive_behind_bulk
from inferq.tasks.faults import SLEEP_PREFIX
from tests.figures import record

TEXTS_PER_JOB = 8  # the stack's INFERQ_MAX_TEXTS


def bulk_text(i: int) -> str:
    # One text of each bulk job sleeps 50 ms: the tiny model alone would clear 2,000 texts
    # before the single texts were even sent, and there would be nothing to overtake.
    return f"{SLEEP_PREFIX}0.05" if i % TEXTS_PER_JOB == 0 else f"bulk text number {i}"


def test_single_texts_overtake_2000_queued_bulk_texts(control):
    result = interactive_behind_bulk(control.api, bulk_texts=2000, texts_per_job=TEXTS_PER_JOB, interactive=10,
                                     bulk_text=bulk_text)
    record("interactive behind 2,000 bulk texts (2 workers, tiny model, 50 ms per bulk job; target p50 < 1000 ms)",
           interactive_behind_bulk_p50_ms=result["interactive_behind_bulk_p50_ms"],
           interactive_behind_bulk_max_ms=result["interactive_behind_bulk_max_ms"],
           bulk_jobs=result["bulk_jobs"], bulk_waiting_after_first=result["bulk_waiting_after_each"][0],
           bulk_waiting_after_last=result["bulk_waiting_after_each"][-1])
    # Not a timing: when the first single text was done, most of the bulk work still waited behind it.
    assert result["bulk_waiting_after_each"][0] > result["bulk_jobs"] // 2
    # And the bulk work is not starved: it all finishes once no single text waits.
    states = control.wait_done(result["bulk_job_ids"], timeout=120)
    assert set(states.values()) == {"SUCCESS"}


def test_lanes_of_jobs_and_per_lane_admission(control):
    # A queue no worker consumes, capped at 3 waiting jobs per lane.
    api = control.start_api(INFERQ_QUEUE="nobody-consumes", INFERQ_MAX_QUEUE_DEPTH="3", INFERQ_RETRY_AFTER="1")
    with requests.Session() as http:
        one = http.post(api + "/jobs", json={"text": "one"}).json()["job_id"]
        low = http.post(api + "/jobs", json={"text": "one, low", "priority": "low"}).json()["job_id"]
        bulk = [http.post(api + "/jobs", json={"texts": ["a", "b"]}) for _ in range(2)]
        assert [r.status_code for r in bulk] == [202, 202]
        assert http.get(f"{api}/jobs/{one}").json()["lane"] == "interactive"
        assert http.get(f"{api}/jobs/{low}").json()["lane"] == "bulk"
        assert http.get(f"{api}/jobs/{bulk[0].json()['job_id']}").json()["lane"] == "bulk"
        full = http.post(api + "/jobs", json={"texts": ["a", "b"]})
        assert (full.status_code, full.json()["error"]) == (429, "queue_full") and "bulk lane" in full.json()["message"]
        assert full.headers["Retry-After"] == "1"
        # The bulk lane is full; a single text still gets in.
        assert http.post(api + "/jobs", json={"text": "still welcome"}).status_code == 202
        assert control.client.llen("nobody-consumes") == 2 and control.client.llen("nobody-consumes.bulk") == 3
        metrics = http.get(api + "/metrics").text
    assert 'inferq_lane_queue_depth{lane="interactive"} 2.0' in metrics
    assert 'inferq_lane_queue_depth{lane="bulk"} 3.0' in metrics
    assert "inferq_queue_depth 5.0" in metrics
