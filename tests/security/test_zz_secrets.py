"""No secret in logs, error messages, results or the repository.

Named to run last in this package: it reads the logs every other security
test's processes wrote.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import requests

from tests.figures import record
from tests.security.conftest import KEYS

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]

SECRET_PATTERNS = {
    "AWS access key id": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "password in a redis URL": re.compile(r"rediss?://[^:/\s]*:([^@/\s]{12,})@"),
}
PLACEHOLDERS = {"**", "secret", "password", "PASSWORD", "${REDIS_PASSWORD}", "$REDIS_PASSWORD"}


def test_no_secret_in_logs_answers_or_results(secure):
    password = secure.redis.password
    with requests.Session() as http:
        job = http.post(secure.keyed_api + "/jobs", json={"text": "secrets"}, headers={"X-API-Key": KEYS[0]},
                        timeout=5).json()["job_id"]
        result = http.get(f"{secure.keyed_api}/jobs/{job}?wait=20", headers={"X-API-Key": KEYS[0]}, timeout=30)
        errors = [http.post(secure.keyed_api + "/jobs", data=b"\xff", headers={"X-API-Key": KEYS[0]}, timeout=5),
                  http.get(secure.keyed_api + "/jobs/x", timeout=5),
                  http.get(secure.api + "/readyz", timeout=5)]
    secure.redis.kill()  # Redis away: the 503 says so without naming its URL
    try:
        with requests.Session() as http:
            errors.append(http.post(secure.api + "/jobs", json={"text": "x"}, timeout=5))
    finally:
        secure.start_redis()
    answers = [result.text, *(e.text for e in errors)]
    logs = sorted(p for p in secure.root.glob("*.log"))
    leaks = [p.name for p in logs if password in p.read_text(errors="replace")
             or any(k in p.read_text(errors="replace") for k in KEYS)]
    record("secrets", logs_checked=len(logs), answers_checked=len(answers), leaks=len(leaks))
    assert errors[-1].status_code == 503
    assert not any(password in a or any(k in a for k in KEYS) for a in answers)
    assert leaks == [], leaks
    # Celery prints the broker URL at start-up: masked.
    assert "redis://:**@" in (secure.root / "w1.log").read_text()


def test_no_secret_in_the_repository():
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    found = []
    for name in files.decode().split("\0"):
        path = ROOT / name
        if not name or not path.is_file() or path.stat().st_size > 2_000_000:
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for what, pattern in SECRET_PATTERNS.items():
            for match in pattern.finditer(text):
                # A placeholder, or a template filled in at run time (f"{password}", $VAR).
                if match.groups() and (match.group(1) in PLACEHOLDERS or match.group(1)[0] in "{$"):
                    continue
                found.append(f"{name}: {what}")
    assert found == [], found
