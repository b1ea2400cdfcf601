"""Settings: defaults, validation, and a clear refusal at start-up."""
from __future__ import annotations

import subprocess
import sys

import pytest

from inferq.celeryconfig import ConfigError, load_settings


def test_defaults_are_usable():
    settings = load_settings({})
    assert settings.torch_threads == 1
    assert settings.model == "distilbert-base-uncased-finetuned-sst-2-english"
    assert settings.visibility_timeout > settings.hard_time_limit
    assert settings.broker_url == settings.result_backend == settings.redis_url


def test_redis_url_feeds_broker_and_results_unless_overridden():
    settings = load_settings({"REDIS_URL": "redis://h:1/2", "INFERQ_RESULT_BACKEND": "redis://r:3/4"})
    assert settings.broker_url == "redis://h:1/2"
    assert settings.result_backend == "redis://r:3/4"


@pytest.mark.parametrize("env,fragment", [
    ({"INFERQ_VISIBILITY_TIMEOUT": "300", "INFERQ_TASK_TIME_LIMIT": "300"}, "must be longer than"),
    ({"INFERQ_VISIBILITY_TIMEOUT": "10"}, "INFERQ_VISIBILITY_TIMEOUT=10s"),
    ({"INFERQ_TORCH_THREADS": "two"}, "not an integer"),
    ({"INFERQ_TORCH_THREADS": "0"}, "at least 1"),
    ({"INFERQ_PRECISION": "fp8"}, "not one of"),
    ({"INFERQ_TASK_SOFT_TIME_LIMIT": "400", "INFERQ_TASK_TIME_LIMIT": "300"}, "exceeds"),
    ({"INFERQ_RESULT_TTL": "10"}, "could expire while it runs"),
])
def test_unsafe_settings_are_refused(env, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_settings(env)


def test_worker_refuses_to_start_with_a_short_visibility_timeout():
    env = {"INFERQ_VISIBILITY_TIMEOUT": "60", "INFERQ_TASK_TIME_LIMIT": "120", "PATH": "/usr/bin:/bin",
           "REDIS_URL": "redis://127.0.0.1:1/0"}
    done = subprocess.run([sys.executable, "-m", "inferq.tasks.worker_main"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("inferq: invalid configuration: INFERQ_VISIBILITY_TIMEOUT")
