"""Flower's view of the jobs a worker takes into its batches: their task events, sent in one publish per batch.

Celery sends the events of the job it delivered itself; the batch-mates were
taken by the task (tasks/batching.py), so it sends theirs: task-received,
task-started, then task-succeeded, task-failed or task-revoked, buffered and
published together when the batch's results are stored.
"""
from __future__ import annotations

import logging
from typing import Any

from inferq.celery_app import app

log = logging.getLogger(__name__)


class Events:
    """Flower's view of the batch-mates: task events buffered, sent in one publish per batch.

    One dispatcher per worker process, on a connection of its own; after a
    failed publish it is dropped and made again for the next batch. Events are
    for watching: losing some never fails a job.
    """

    def __init__(self) -> None:
        self._dispatcher: Any = None

    def send(self, hostname: str, type_: str, job_id: str, **fields: Any) -> None:
        try:
            if self._dispatcher is None:
                self._dispatcher = app.events.Dispatcher(
                    app.connection_for_write(), hostname=hostname, buffer_group=("task",), buffer_limit=10_000)
            self._dispatcher.send(type_, uuid=job_id, **fields)
        except Exception as exc:
            self._drop(exc)

    def flush(self) -> None:
        if self._dispatcher is None:
            return
        try:
            self._dispatcher.flush()
        except Exception as exc:
            self._drop(exc)

    def _drop(self, exc: Exception) -> None:
        log.warning("could not send task events for batched jobs: %s", exc)
        dispatcher, self._dispatcher = self._dispatcher, None
        if dispatcher is not None:
            try:
                dispatcher.close()
                dispatcher.connection.release()
            except Exception:
                pass


events = Events()
