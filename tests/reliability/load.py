"""Load generators for fault tests: submit through the API and remember what was accepted."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import requests

from tests.reliability.stack import submit


@dataclass
class Outcome:
    """One submit: when it was sent, its status (0: no answer) and how long the answer took."""

    sent: float
    status: int
    seconds: float
    job_id: str | None = None
    retry_after: str | None = None
    error: str | None = None  # a refusal's stable code


@dataclass
class Load:
    """Closed-loop submitters: each thread sends the next job when the last is answered."""

    base: str
    threads: int = 4
    text: str = "load"
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        for i in range(self.threads):
            t = threading.Thread(target=self._run, args=(i,), daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def stop(self) -> list[Outcome]:
        self._stop.set()
        for t in self._workers:
            t.join()
        return self.outcomes

    def _run(self, i: int) -> None:
        n = 0
        with requests.Session() as session:
            while not self._stop.is_set():
                n += 1
                self.outcomes.append(one_submit(session, self.base, f"{self.text} {i}.{n}"))
                if self.outcomes[-1].status != 202:
                    time.sleep(0.05)  # Redis is away: do not spin


def one_submit(session: requests.Session, base: str, text: str) -> Outcome:
    """Submit one job and time the answer."""
    sent = time.monotonic()
    try:
        response = submit(session, base, text, timeout=10)
    except requests.RequestException:
        return Outcome(sent, 0, time.monotonic() - sent)
    try:
        body = response.json()
    except ValueError:
        body = {}
    job_id = body.get("job_id") if response.status_code == 202 else None
    return Outcome(sent, response.status_code, time.monotonic() - sent, job_id,
                   response.headers.get("Retry-After"), body.get("error"))
