"""Fixtures that start real services: our own redis-server, celery workers and gunicorn.

Nothing here touches a Redis the tests did not start: before any inferq
module is imported, REDIS_URL points at a port nothing listens on, so an
in-process import that forgot its fixture fails instead of reaching a
shared Redis.
"""
from __future__ import annotations

import os
import socket

os.environ["REDIS_URL"] = "redis://127.0.0.1:1/0"  # see the module docstring

from pathlib import Path

import pytest
import requests

from inferq.stack import processes
from inferq.stack.redis_server import RedisServer, free_port

ROOT = Path(__file__).resolve().parent.parent
MODEL_CACHE = ROOT / ".cache" / "models"

HEARTBEAT_SECONDS = "0.5"
"""Workers beat fast in tests, so readiness is seen quickly."""


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """The offline tiny DistilBERT (built once, deterministic, so cached between runs)."""
    from inferq.model.builder import build

    return build("tiny", MODEL_CACHE / "offline-tiny")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> RedisServer:
    """A redis-server of our own for the whole session (failing, never skipping, if it cannot start)."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_client(redis_server):
    return redis_server.client()


@pytest.fixture(scope="session")
def service_env(redis_server, tiny_model) -> dict[str, str]:
    """Environment for every service process of the session."""
    return {
        "REDIS_URL": redis_server.url,
        "INFERQ_MODEL": str(tiny_model),
        "INFERQ_HEARTBEAT_SECONDS": HEARTBEAT_SECONDS,
        "INFERQ_MAX_TEXTS": "8",
        "INFERQ_MAX_BODY_BYTES": "65536",
    }


def start_workers(env, names, redis_client, log_dir: Path):
    """Start celery workers and wait until each has sent its first heartbeat."""
    from inferq.contract import WORKERS_KEY

    started = []
    for name in names:
        log = log_dir / f"{name}.log"
        process = processes.spawn(processes.worker_command(name), env, log)
        started.append(process)
        full_name = f"{name}@{socket.gethostname()}"
        processes.wait_until(lambda full_name=full_name: redis_client.zscore(WORKERS_KEY, full_name) is not None,
                             60, f"worker {name}", process, log)
    return started


@pytest.fixture(scope="session")
def workers(service_env, redis_client, tmp_path_factory):
    """Two real celery worker processes on the tiny model."""
    started = start_workers(service_env, ["w1", "w2"], redis_client, tmp_path_factory.mktemp("workers"))
    yield started
    for process in started:
        processes.stop(process)


def start_api(env, log_dir: Path):
    """Start gunicorn on a free port; return (process, base URL) once /healthz answers."""
    bind = f"127.0.0.1:{free_port()}"
    log = log_dir / "api.log"
    process = processes.spawn(processes.api_command(bind), env, log)
    base = f"http://{bind}"
    processes.wait_until(lambda: processes.http_ok(base + "/healthz"), 30, "API", process, log)
    return process, base


@pytest.fixture(scope="session")
def api_url(service_env, workers, tmp_path_factory) -> str:
    """The API under gunicorn, with the session's workers behind it."""
    process, base = start_api(service_env, tmp_path_factory.mktemp("api"))
    yield base
    processes.stop(process)


@pytest.fixture()
def celery_client(redis_server):
    """A Celery app of a client's (JSON only) on the session's Redis: to send tasks, revoke, read events."""
    from celery import Celery

    app = Celery("test-client", broker=redis_server.url, backend=redis_server.url)
    app.conf.update(task_serializer="json", accept_content=["json"], result_serializer="json",
                    result_accept_content=["json"])
    yield app
    app.close()


@pytest.fixture()
def http():
    with requests.Session() as session:
        yield session


def pytest_terminal_summary(terminalreporter):
    """Repeat the figures fault and fuzz tests measured (tests/figures.py) at the end of the run."""
    from tests import figures

    if figures.LINES:
        terminalreporter.section("measured figures")
        for line in figures.LINES:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def container_base() -> str:
    """The container engine, installed and configured if needed, and the local base image; the base's name."""
    from tests.worker_image import engine

    try:
        return engine.prepare()
    except engine.EngineUnavailable as exc:
        engine.refuse(str(exc))


@pytest.fixture(scope="session")
def worker_image(container_base):
    """worker_image/Dockerfile built from this checkout, once per session (tests/worker_image/engine.py).

    Built here, where the package mirrors are reachable: the deploy tests' own
    build, inside a network namespace without a way out, then finds every layer cached.
    """
    from tests.worker_image import engine

    return engine.build_test_image(container_base)
