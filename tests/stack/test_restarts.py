"""The stack's restart policy: growing backoff for a service that ran, the stack stops only for one that never did."""
from __future__ import annotations

from inferq.stack import supervision
from inferq.stack.restarts import BACKOFF_MAX_SECONDS, Restarts, backoff_seconds
from inferq.stack.supervisor_config import START_RETRIES


def test_backoff_doubles_from_one_second_up_to_its_cap():
    assert [backoff_seconds(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 30, 30, 30]
    assert backoff_seconds(10**6) == BACKOFF_MAX_SECONDS == 30


def test_a_service_that_never_started_is_tried_start_retries_more_times_then_stops_the_stack():
    restarts = Restarts()
    waits = [restarts.failed_start("api", now=100.0) for _ in range(START_RETRIES + 1)]
    assert waits == [1, 2, 4, None]


def test_a_service_that_ran_is_never_given_up_and_its_backoff_starts_over_once_it_stays_up():
    restarts = Restarts()
    restarts.running("worker.1")
    waits = [restarts.failed_start("worker.1", now=0.0) for _ in range(50)]
    assert None not in waits and waits[:7] == [1, 2, 4, 8, 16, 30, 30] and max(waits) == 30
    restarts.running("worker.1")  # stayed up its start time again
    assert restarts.failed_start("worker.1", now=0.0) == 1


def test_a_start_is_due_once_after_its_wait():
    restarts = Restarts()
    restarts.running("worker.2")
    restarts.failed_start("worker.2", now=10.0)
    restarts.failed_start("worker.2", now=10.0)  # the second failed start in a row: 2 s
    assert restarts.pending("worker.2") and restarts.due(11.9) == []
    assert restarts.due(12.0) == ["worker.2"]
    assert not restarts.pending("worker.2") and restarts.due(100.0) == []


def test_restart_line_says_why_and_when(tmp_path):
    (tmp_path / "supervisord.log").write_text(
        "2026-11-28 05:20:18,123 WARN exited: worker.1 (terminated by SIGKILL; not expected)\n")
    line = supervision.restart_line("worker.1", 3, 4.0, True, tmp_path)
    assert line == ("worker.1 died 3 times in a row within 30s of starting (last: terminated by SIGKILL); "
                    "starting it again in 4s: it ran before, so it is never given up (waits 1, 2, 4 ... 30 s)")
    first = supervision.restart_line("api", 1, 1.0, False, tmp_path)
    assert first.startswith("api died once within 15s of starting (last: unknown); starting it again in 1s")
    assert first.endswith(f"try 2 of {START_RETRIES + 1}, as it has not started yet")


def test_ran_before_reads_supervisords_log(tmp_path):
    (tmp_path / "supervisord.log.1").write_text(
        "2026-11-28 05:20:18,123 INFO success: worker.2 entered RUNNING state, process has stayed up for > than "
        "30 seconds (startsecs)\n")
    (tmp_path / "supervisord.log").write_text("2026-11-28 05:25:18,123 INFO spawned: 'worker.1' with pid 7\n")
    assert supervision.ran_before("worker.2", tmp_path)
    assert not supervision.ran_before("worker.1", tmp_path)
