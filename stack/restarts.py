"""When the stack restarts a service that died while starting, and the one case in which it gives up.

A service that dies before it has stayed up its start time (START_SECONDS) has
failed a start. What that means depends on whether it ever started since the
stack did:

- Never started: a configuration error (the model cannot load, the port is
  taken). Trying forever would hide it behind an endless loop of restarts, so
  after START_RETRIES more tries the stack stops, saying which and why.
- Started before (supervisord had it RUNNING, or the stack had said it was up,
  which it does only once every service answered): a crash, such as the OOM
  killer's SIGKILL while a worker loads its model again. It is restarted after
  a wait that doubles with each failed start in a row, up to
  BACKOFF_MAX_SECONDS, for as long as it keeps dying: it is never given up,
  and the API and Redis go on serving meanwhile.

The count of failed starts in a row goes back to zero once the service stays
up its start time (supervisord's RUNNING). This module only decides; stack/
supervision.py reads supervisord's states and starts the services.
"""
from __future__ import annotations

from dataclasses import dataclass

from inferq.stack.supervisor_config import START_RETRIES

BACKOFF_FIRST_SECONDS = 1.0
"""The wait after a first failed start: a one-off crash is repaired almost at once."""

BACKOFF_MAX_SECONDS = 30.0
"""The longest wait between two starts. A service that keeps dying still gets a try twice a minute (it
is back within 30 s of whatever killed it going away), while ten workers that keep failing to load a
model on two cores do not spend the machine on loads that die."""


def backoff_seconds(failures: int) -> float:
    """The wait before the next start after that many failed starts in a row: 1, 2, 4, 8, 16, 30, 30 ... s."""
    # The exponent is bounded so that a service failing for days never makes a huge integer.
    return min(BACKOFF_FIRST_SECONDS * 2 ** min(max(failures - 1, 0), 16), BACKOFF_MAX_SECONDS)


@dataclass
class Service:
    """What the stack knows of one supervised process."""

    name: str
    started: bool = False
    """It has started since the stack did: later failed starts are crashes, never a reason to stop the stack."""
    failures: int = 0
    """Failed starts in a row (deaths within its start time); zero again once it stays up."""
    restart_at: float | None = None
    """When (time.monotonic) it is due to be started again; None while none is due."""


class Restarts:
    """The restart decisions for every service of the stack."""

    def __init__(self) -> None:
        self._services: dict[str, Service] = {}

    def service(self, name: str) -> Service:
        """The record of the named service (a fresh one the first time)."""
        return self._services.setdefault(name, Service(name))

    def running(self, name: str) -> None:
        """The service has stayed up its start time: it has started, and its backoff starts over."""
        service = self.service(name)
        service.started, service.failures = True, 0

    def failed_start(self, name: str, now: float) -> float | None:
        """Count a failed start; the wait before the next start, or None if the stack must stop (never started)."""
        service = self.service(name)
        service.failures += 1
        if not service.started and service.failures > START_RETRIES:
            return None
        wait = backoff_seconds(service.failures)
        service.restart_at = now + wait
        return wait

    def pending(self, name: str) -> bool:
        """A start of the service is scheduled and not yet made."""
        return self.service(name).restart_at is not None

    def due(self, now: float) -> list[str]:
        """The services whose start is due now (each returned once per failed start)."""
        names = [s.name for s in self._services.values() if s.restart_at is not None and s.restart_at <= now]
        for name in names:
            self._services[name].restart_at = None
        return names
