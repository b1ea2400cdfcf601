"""Flower in a real headless Chromium: every worker online, a job this test submitted shown as succeeded."""
from __future__ import annotations

import base64
import socket

import pytest
import requests
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser.conftest import ARTIFACTS, FLOWER_AUTH

pytestmark = pytest.mark.slow

WORKER_NAMES = [f"{name}@{socket.gethostname()}" for name in ("w1", "w2")]
"""The conftest's two workers, as Flower names them."""


def authenticate(browser) -> None:
    """Send Flower's basic-auth header with every request of the page, XHRs included."""
    token = base64.b64encode(":".join(FLOWER_AUTH).encode()).decode()
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}})


def wait_for(browser, condition, what: str, screenshot: str, timeout: float = 30):
    """Wait for condition; on timeout fail with what was expected, keeping the screenshot."""
    try:
        # Flower redraws its tables while we read them: a row found a moment ago
        # can be gone (stale); that is "not yet", so look again.
        return WebDriverWait(browser, timeout, poll_frequency=0.5,
                             ignored_exceptions=[StaleElementReferenceException]).until(condition)
    except TimeoutException:
        browser.save_screenshot(str(ARTIFACTS / screenshot))
        pytest.fail(f"{what} not shown within {timeout}s; see {ARTIFACTS / screenshot}")


def online_workers(browser) -> set[str]:
    """Names of the rows of Flower's workers table whose status badge says Online."""
    names = set()
    for row in browser.find_elements(By.CSS_SELECTOR, "#workers-table tbody tr"):
        cells = row.find_elements(By.TAG_NAME, "td")
        if len(cells) >= 2 and cells[1].text.strip() == "Online":
            names.add(cells[0].text.strip())
    return names


def test_flower_needs_credentials(flower_url):
    assert requests.get(flower_url + "/workers", timeout=5).status_code == 401
    assert requests.get(flower_url + "/workers", auth=FLOWER_AUTH, timeout=5).status_code == 200


def test_flower_shows_workers_online_and_our_job_succeeded(flower_url, api_url, browser):
    # Submitted after Flower started, so Flower sees the job's events.
    response = requests.post(api_url + "/jobs", json={"text": "shown in flower"}, timeout=10)
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    result = requests.get(f"{api_url}/jobs/{job_id}?wait=30", timeout=40).json()
    assert result["status"] == "succeeded", result

    authenticate(browser)
    browser.get(flower_url + "/workers")
    wait_for(browser, lambda b: set(WORKER_NAMES) <= online_workers(b),
             f"workers {WORKER_NAMES} online", "flower-workers-failed.png")
    browser.save_screenshot(str(ARTIFACTS / "flower-workers.png"))

    browser.get(flower_url + "/tasks")

    def job_row_state(b):
        rows = b.find_elements(By.ID, job_id)
        return rows and "SUCCESS" in rows[0].text

    wait_for(browser, job_row_state, f"job {job_id} as SUCCESS", "flower-tasks-failed.png")
    assert "inferq.classify" in browser.find_element(By.ID, job_id).text
    browser.save_screenshot(str(ARTIFACTS / "flower-tasks.png"))
