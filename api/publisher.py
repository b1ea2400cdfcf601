"""Put a job's message on its queue: one LPUSH of contract.classify_envelope.

Celery's send_task would publish the same message, and also subscribe to and
unsubscribe from the job's result channel (its producer prepares for
``AsyncResult.get``, which the API never calls: it reads results by key and
waits through one shared subscription, api/results.py). That is two Redis
commands per job and most of the CPU the API spent publishing. The queue is
kombu's Redis list named after the queue; workers take from its right end.
"""
from __future__ import annotations

import uuid

import redis

from inferq.contract import DELIVER_CALLBACK_TASK, classify_envelope, task_envelope


def publish(client: redis.Redis, queue: str, job_id: str, texts: list[str], queued_at: float,
            callback: bool = False) -> None:
    """Queue the job (raises redis errors: the caller drops the job's record and answers 503).

    callback: it was submitted with a callback_url (its worker then queues the delivery).
    """
    client.lpush(queue, classify_envelope(job_id, texts, queued_at, queue, callback))


def publish_callback(client: redis.Redis, queue: str, job_id: str) -> None:
    """Queue the delivery of a job's callback (tasks/callbacks.py)."""
    client.lpush(queue, task_envelope(DELIVER_CALLBACK_TASK, uuid.uuid4().hex, [job_id], {}, queue))
