"""Flower as the stack runs it (its command line, basic auth), and a headless Debian Chromium."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from inferq import commands
from inferq.stack import processes
from inferq.stack.readiness import http_ok
from inferq.stack.redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
"""Screenshots the browser tests leave behind (gitignored)."""

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1400,900")
"""Headless, no sandbox (root in CI), and nothing that reaches beyond this machine."""

FLOWER_AUTH = ("inferq", "browser-test-password")


@pytest.fixture(scope="module")
def flower_url(service_env, workers, tmp_path_factory) -> str:
    """Flower on a free port, started with the stack's own command line, behind basic auth."""
    port = free_port()
    env = {**service_env, "PATH": f"{processes.BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "FLOWER_BASIC_AUTH": ":".join(FLOWER_AUTH), "FLOWER_ADDRESS": "127.0.0.1", "FLOWER_PORT": str(port)}
    log = tmp_path_factory.mktemp("flower") / "flower.log"
    process = processes.spawn(commands.flower(str(processes.BIN)), env, log)
    url = f"http://127.0.0.1:{port}"
    processes.wait_until(lambda: http_ok(url + "/healthcheck"), 30, "Flower", process, log)
    yield url
    processes.stop(process)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Debian's Chromium under Selenium, with a fresh profile; fails (never skips) if it is missing."""
    for binary in (CHROMIUM, CHROMEDRIVER):
        if not shutil.which(binary):
            pytest.fail(f"{binary} is missing: run scripts/system-deps.sh (Debian: chromium, chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    # An explicit driver path: Selenium Manager must not try to download one.
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    ARTIFACTS.mkdir(exist_ok=True)
    yield driver
    driver.quit()
