"""Settings: one object per kind of process holding its parts, defaults, validation, a clear refusal at start."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from inferq import settings
from inferq.settings import Api, Client, ConfigError, Delivery, RedisLink, Stack, Worker, current, load

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def test_defaults_are_usable():
    worker = load(Worker, {})
    assert worker.torch_threads == 1
    assert worker.model.name == "distilbert-base-uncased-finetuned-sst-2-english"
    assert worker.delivery.visibility_timeout >= settings.LEASE_BEATS * worker.redis.heartbeat_seconds
    assert worker.delivery.soft_time_limit == worker.delivery.task_time_limit - 30
    assert worker.redis.broker == worker.redis.backend == settings.LOCAL_REDIS_URL


def test_redis_url_feeds_broker_and_results_unless_overridden():
    redis = load(RedisLink, {"REDIS_URL": "redis://h:1/2", "INFERQ_RESULT_BACKEND": "redis://r:3/4"})
    assert redis.broker == "redis://h:1/2"
    assert redis.backend == "redis://r:3/4"


def test_a_rediss_url_checks_the_certificate_against_the_ca_set():
    import ssl

    tls = load(RedisLink, {"REDIS_URL": "rediss://u:p@h:6379/0", "INFERQ_REDIS_CA_FILE": "/etc/ca.crt"})
    assert tls.broker == tls.backend == "rediss://u:p@h:6379/0?ssl_cert_reqs=required&ssl_ca_certs=%2Fetc%2Fca.crt"
    assert tls.ssl_options(tls.broker) == {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": "/etc/ca.crt"}
    system = load(RedisLink, {"REDIS_URL": "rediss://h:6379/0?ssl_cert_reqs=optional"})
    assert system.broker == "rediss://h:6379/0?ssl_cert_reqs=optional"  # the URL's own choice is kept
    plain = load(RedisLink, {"REDIS_URL": "redis://h:1/0", "INFERQ_REDIS_CA_FILE": "/etc/ca.crt"})
    assert plain.broker == "redis://h:1/0" and plain.ssl_options(plain.broker) is None


@pytest.mark.parametrize("env,fragment", [
    ({"INFERQ_VISIBILITY_TIMEOUT": "5"}, "INFERQ_VISIBILITY_TIMEOUT=5s must be at least 3 heartbeats"),
    ({"INFERQ_VISIBILITY_TIMEOUT": "10", "INFERQ_HEARTBEAT_SECONDS": "4"}, "a running job's lease runs out"),
    ({"INFERQ_TORCH_THREADS": "two"}, "INFERQ_TORCH_THREADS='two' is not an integer"),
    ({"INFERQ_TORCH_THREADS": "0"}, "at least 1"),
    ({"INFERQ_PRECISION": "fp8"}, "not one of"),
    ({"INFERQ_TASK_SOFT_TIME_LIMIT": "400", "INFERQ_TASK_TIME_LIMIT": "300"}, "exceeds"),
    ({"INFERQ_RESULT_TTL": "10"}, "could expire while it runs"),
])
def test_unsafe_worker_settings_are_refused(env, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load(Worker, env)


def test_a_worker_only_problem_is_no_problem_for_other_processes():
    env = {"INFERQ_VISIBILITY_TIMEOUT": "1"}
    for section in (RedisLink, Delivery, Api, Client, Stack):
        load(section, env)  # no ConfigError: only the worker checks its leases


def test_a_process_holds_its_parts_each_read_once():
    # celeryconfig reads the Delivery and RedisLink parts: in a worker they are the worker's own objects.
    worker = current(Worker)
    assert worker.delivery is current(Delivery) and worker.redis is current(RedisLink)
    api = load(Api, {"INFERQ_QUEUE": "q", "INFERQ_API_KEYS": "k" * 20, "INFERQ_WEBHOOK_SECRET": "s" * 20})
    assert (api.redis.queue, api.keys.accepted, api.webhooks.secret) == ("q", ("k" * 20,), "s" * 20)
    assert load(Client, {"INFERQ_API_BIND": "0.0.0.0:8000"}).url == "http://127.0.0.1:8000"


def test_no_settings_class_takes_a_librarys_name():
    import celery
    import flask
    import kombu
    import redis

    taken = {name for module in (celery, flask, kombu, redis) for name in dir(module)}
    assert not {name for name in settings.__all__ if name[0].isupper()} & taken


def test_one_vocabulary_for_booleans():
    assert load(Stack, {"HF_HUB_OFFLINE": "on"}).hub_offline
    assert not load(Stack, {"HF_HUB_OFFLINE": "0"}).hub_offline
    with pytest.raises(ConfigError, match="HF_HUB_OFFLINE='maybe' is not one of 1, true, yes, on, 0"):
        load(Stack, {"HF_HUB_OFFLINE": "maybe"})


def run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "REDIS_URL": "redis://127.0.0.1:1/0", **env}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)


def test_worker_refuses_to_start_with_a_short_visibility_timeout_in_one_line():
    done = run([sys.executable, "-m", "inferq.tasks.worker_main"],
               {"INFERQ_VISIBILITY_TIMEOUT": "5", "INFERQ_HEARTBEAT_SECONDS": "2"})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "inferq: invalid configuration: INFERQ_VISIBILITY_TIMEOUT=5s must be at least 3 heartbeats "
        "(INFERQ_HEARTBEAT_SECONDS=2), or a running job's lease runs out between two renewals; "
        "raise the timeout or beat faster"]


def test_api_refuses_to_start_with_a_bad_setting_in_one_line():
    # gunicorn reads its config module first; the API's settings are checked there.
    done = run([str(BIN / "gunicorn"), "-c", "python:inferq.api.gunicorn_conf", "--check-config",
                "inferq.api:create_app()"], {"INFERQ_MAX_TEXTS": "0"})
    assert done.returncode != 0
    assert "inferq: invalid configuration: INFERQ_MAX_TEXTS=0 must be at least 1" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_client_is_never_stopped_by_a_server_only_setting():
    done = run([str(BIN / "inferq"), "--help"], {"INFERQ_VISIBILITY_TIMEOUT": "1", "INFERQ_MAX_TEXTS": "0"})
    assert done.returncode == 0, done.stderr
    assert "submit-file" in done.stdout


def test_importing_settings_and_celery_config_never_exits():
    done = run([sys.executable, "-c", "import inferq.settings, inferq.celeryconfig; print('imported')"],
               {"INFERQ_VISIBILITY_TIMEOUT": "1"})
    assert done.returncode == 0 and done.stdout.strip() == "imported", done.stderr


def test_docs_settings_page_is_the_generated_table():
    page = (ROOT / "docs" / "settings.md").read_text()
    assert page.strip() == settings.markdown().strip(), "regenerate it: python -m inferq.settings > docs/settings.md"
