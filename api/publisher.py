"""A job's message, and putting it on its queue: kombu's Redis list named after the queue, LPUSH.

Celery's send_task would publish the same message (wire.classify_envelope,
checked against send_task's in tests/broker/test_wire.py), and also subscribe
to and unsubscribe from the job's result channel (its producer prepares for
``AsyncResult.get``, which the API never calls: it reads results by key and
waits through one shared subscription, api/results.py). That is two Redis
commands per job and most of the CPU the API spent publishing. The push
itself, which also wakes an idle worker, is the job store's (api/store.py).
"""
from __future__ import annotations

import redis

from inferq.broker import wake
from inferq.broker.wire import callback_envelope, classify_envelope


def job_message(job_id: str, texts: list[str], queued_at: float, queue: str, callback: bool = False) -> str:
    """A job's message. callback: it was submitted with a callback_url (its worker then queues the delivery)."""
    return classify_envelope(job_id, texts, queued_at, queue, callback)


def publish_callback(client: redis.Redis, queue: str, job_id: str) -> None:
    """Queue the delivery of a job's callback (tasks/callbacks.py)."""
    wake.push(client, queue, callback_envelope(job_id, queue))
