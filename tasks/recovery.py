"""A worker that comes back under its old name gives back, at once, the jobs its dead predecessor held.

Redis gives the unacknowledged jobs of a worker that died to another worker only
after the visibility timeout, which must outlast the longest job (an hour by
default). But the local stack's supervisor and a container's restart policy
restart a dead worker under the same Celery node name (w1@host, worker@host-w1),
and node names are unique: when a worker with that name starts, the process that
held the name is gone, and so is any job it was running. On ``worker_ready``,
before this worker takes anything, it looks for unacknowledged messages whose job
a worker of its name started last (contract.RUNNING_KEY, written at each start)
and puts them back at the head of the queue with kombu's own restore.

Jobs a worker took into a micro-batch carry the same running mark (written by
the take, tasks/batching.py), so they are given back here too. A job given
back here may have finished before its worker died (its acknowledgement lost);
it then runs again, and is stored once under its id.
"""
from __future__ import annotations

import json
import logging
from typing import Any

from celery import signals

from inferq.contract import RUNNING_KEY, UNACKED_KEY

log = logging.getLogger(__name__)


def orphans(client: Any, node: str) -> list[bytes]:
    """Delivery tags of the unacknowledged messages whose job a worker named node started last."""
    jobs: dict[bytes, str] = {}
    for tag, raw in client.hgetall(UNACKED_KEY).items():
        try:
            message = json.loads(raw)[0]  # kombu keeps [message, exchange, routing key]
            jobs[tag] = message["headers"]["id"]
        except (ValueError, LookupError, TypeError):
            continue  # not a Celery task message: not ours to judge
    if not jobs:
        return []
    holders = client.mget([RUNNING_KEY.format(job_id) for job_id in jobs.values()])
    return [tag for tag, holder in zip(jobs, holders) if holder is not None and holder.decode() == node]


def give_back(channel: Any, node: str) -> list[bytes]:
    """Put the orphans of node back at the head of the queue; return their delivery tags."""
    tags = orphans(channel.client, node)
    for tag in tags:
        channel.qos.restore_by_tag(tag, leftmost=True)
    return tags


@signals.worker_ready.connect
def _give_back_orphans(sender: Any = None, **_: Any) -> None:
    # Sent once the consumer is set up and before its loop reads a message: this
    # worker holds nothing yet, so every job started under its name is an orphan.
    try:
        tags = give_back(sender.task_consumer.channel, sender.hostname)
    except Exception as exc:  # never stop a worker from starting: the visibility timeout still applies
        log.warning("could not look for jobs a previous %s left behind (%s: %s); they come back after the "
                    "visibility timeout", getattr(sender, "hostname", "worker"), type(exc).__name__, exc)
        return
    if tags:
        log.warning("gave back %d job(s) that this worker's previous process (%s) held when it died",
                    len(tags), sender.hostname)
