"""SIGTERM's handler (tasks/shutdown.py), in this process: a job that starts after it is given back, not run."""
from __future__ import annotations

import pytest

from inferq.tasks import shutdown


@pytest.fixture
def sigterm_before_the_job(monkeypatch):
    """The handler ran with no job in flight: the transport had taken a batch that Celery had not started."""
    from celery.worker import state

    monkeypatch.setattr(shutdown, "_leaving", False)
    monkeypatch.setattr(state, "active_requests", set())
    monkeypatch.setattr(state, "should_stop", None)
    shutdown._on_sigterm()  # monkeypatch puts _leaving and Celery's state back after the test


def test_a_job_started_after_sigterm_is_interrupted_at_once(sigterm_before_the_job):
    with pytest.raises(shutdown.JobInterrupted):
        shutdown.interrupt_if_leaving()


def test_without_sigterm_a_job_runs(monkeypatch):
    monkeypatch.setattr(shutdown, "_leaving", False)
    shutdown.interrupt_if_leaving()  # nothing raised
