"""A worker that comes back under its old name gives back, at once, the jobs its dead predecessor held.

A dead worker's jobs come back once their leases run out (the visibility
timeout: broker/holdings.py). But the local stack's supervisor and a
container's restart policy restart a dead worker under the same Celery node
name (w1@host, worker@host-w1), and node names are unique: when a worker with
that name starts, the process that held the name is gone, and so is any job it
was running. On ``worker_ready``, before this worker takes anything, it gives
back every message in its name's holding set (contract.HOLDING_KEY, written by
each take) that is still recorded, to the head of its queue, counted as a
delivery (the poison-job guard). A job given back here may have finished
before its worker died (its acknowledgement lost); it then runs again, and is
stored once under its id.
"""
from __future__ import annotations

import logging
from typing import Any

from celery import signals

from inferq.broker.holdings import holdings
from inferq.contract import HOLDING_KEY, HOLDING_PLACEHOLDER
from inferq.settings import Worker, current

log = logging.getLogger(__name__)


def give_back(channel: Any, node: str) -> list[bytes]:
    """Put what the worker named node held back at the head of its queues; return their delivery tags."""
    client = channel.client
    key = HOLDING_KEY.format(node)
    tags = sorted(tag for tag in client.smembers(key) if tag != HOLDING_PLACEHOLDER.encode())
    for tag in tags:
        channel.qos.restore_by_tag(tag, client=client, worker_died=True)
    client.delete(key)
    return tags


@signals.worker_ready.connect
def _give_back_orphans(sender: Any = None, **_: Any) -> None:
    # Sent once the consumer is set up and before its loop reads a message: this
    # worker holds nothing yet, so everything held under its name is an orphan.
    if holdings.tags():
        log.error("worker_ready came after this worker took jobs: not giving back its predecessor's")
        return
    try:
        tags = give_back(sender.task_consumer.channel, sender.hostname)
        # The name's holding set, kept (with its expiry) from before this worker's first take.
        holdings.keep(sender.task_consumer.channel.client, current(Worker).redis.result_ttl)
    except Exception as exc:  # never stop a worker from starting: the leases still run out
        log.warning("could not look for jobs a previous %s left behind (%s: %s); they come back once their "
                    "leases run out (the visibility timeout)", getattr(sender, "hostname", "worker"),
                    type(exc).__name__, exc)
        return
    if tags:
        log.warning("gave back %d job(s) that this worker's previous process (%s) held when it died",
                    len(tags), sender.hostname)
