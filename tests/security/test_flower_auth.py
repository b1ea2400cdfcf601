"""Flower, started as the stack starts it (`celery -A inferq.celery_app flower`, FLOWER_BASIC_AUTH), needs its login."""
from __future__ import annotations

import secrets

import pytest
import requests

from inferq.stack import processes
from inferq.stack.redis_server import free_port

pytestmark = pytest.mark.slow

PAGES = ["/", "/workers", "/tasks", "/broker", "/api/workers", "/api/tasks", "/api/task/info/x"]
"""Flower's pages and API. Flower keeps /healthcheck and /metrics (Prometheus) open by design:
they carry counts and worker names, not task arguments or results."""


def test_flower_requires_basic_auth(secure):
    password = secrets.token_urlsafe(18)
    port = free_port()
    log = secure.log("flower")
    env = secure.service_env(FLOWER_BASIC_AUTH=f"inferq:{password}", FLOWER_ADDRESS="127.0.0.1",
                             FLOWER_PORT=str(port))
    flower = processes.spawn([str(processes.BIN / "celery"), "-A", "inferq.celery_app", "flower"], env, log)
    base = f"http://127.0.0.1:{port}"
    try:
        processes.wait_until(lambda: requests.get(base + "/healthcheck", timeout=1).status_code in (200, 401),
                             30, "flower", flower, log)
        with requests.Session() as http:
            for page in PAGES:
                assert http.get(base + page, timeout=5).status_code == 401, page
                assert http.get(base + page, auth=("inferq", "wrong"), timeout=5).status_code == 401, page
            assert http.get(base + "/api/workers", auth=("inferq", password), timeout=10).status_code == 200
    finally:
        processes.stop(flower)
    assert password not in log.read_text(errors="replace")
