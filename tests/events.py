"""The task events Flower would see, received on a thread of their own: for tests."""
from __future__ import annotations

import threading
from collections import defaultdict


class EventLog:
    """Every task event received, by type and task id (the last one of each)."""

    def __init__(self, app):
        self.events: dict[str, dict[str, dict]] = defaultdict(dict)
        self._connection = app.connection_for_read()
        self._receiver = app.events.Receiver(self._connection, handlers={"*": self._on_event})
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _on_event(self, event: dict) -> None:
        if "uuid" in event:
            self.events[event["type"]][event["uuid"]] = event

    @property
    def succeeded(self) -> set[str]:
        return set(self.events["task-succeeded"])

    @property
    def received(self) -> set[str]:
        return set(self.events["task-received"])

    def _run(self):
        self._receiver.should_stop = False
        for _ in self._receiver.consume(limit=None, timeout=None, wakeup=False):
            if self._receiver.should_stop:
                break

    def close(self):
        self._receiver.should_stop = True
        self._thread.join(5)
        self._connection.release()
