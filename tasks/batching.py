"""Adaptive micro-batching: a worker runs what is already waiting for it in shared forward passes.

Celery hands the worker one job (prefetch 1, broker/transport.py); the take that
took it took the jobs waiting behind it too, oldest first, interactive lane
first, while their texts and its own fit in ``INFERQ_BATCH_SIZE`` texts, in the
same atomic script (broker/scripts.TAKE): each left its queue and entered the
unacknowledged record in that one step. The task claims them (claim()). Nothing
is waited for: a lone job starts at once, and under load a batch grows to
whatever arrived while the last one ran.

A job of more texts than ``INFERQ_BATCH_SIZE`` runs in passes of at most that
many (tasks/passes.py); before each pass after the first, the worker takes the
interactive jobs waiting, with the same script (take(), mode "mates"), and runs
them first, in a pass of their own: a single text never waits for a whole bulk
job, only for the pass in flight.

What holds, and how:

- Late acknowledgement: each taken job is acknowledged once its result is
  stored; a worker that dies leaves them recorded, given back when their lease
  runs out or at once when it restarts under its name (tasks/recovery.py).
- Per-job failure isolation: a job refused by its own checks fails alone; a
  forward pass that raises is retried job by job.
- Per-job delivery counts: a job given back after its worker died is never
  taken as a batch-mate, and takes none itself: after a crash every such job
  runs alone, so a poison job spends only its own deliveries.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import redis

from inferq import contract
from inferq.broker import scripts, wire
from inferq.broker.holdings import Held, holdings

log = logging.getLogger(__name__)


@dataclass
class TakenJob:
    """A waiting job this worker took into its batch: its message as it lay in its queue, read."""

    job_id: str
    texts: list[str]
    queued_at: float | None
    headers: dict[str, Any]
    held: Held
    cancel_mark: bytes | None = None  # read by the take: cancelled before it was taken


def read(raw: bytes, default_queue: str) -> TakenJob:
    """A taken classify message; its queue is its routing key (as the API and kombu write it), else
    default_queue."""
    headers, properties, args, kwargs = wire.read_task(raw)
    queue = properties.get("delivery_info", {}).get("routing_key") or default_queue
    texts = args[0] if args else kwargs["texts"]
    return TakenJob(headers["id"], texts, kwargs.get("queued_at"), headers,
                    Held(properties["delivery_tag"], queue, raw))


def claim(job_id: str, default_queue: str) -> list[TakenJob]:
    """The jobs the transport's take took behind job_id (its batch-mates), read."""
    return _read_all(holdings.claim(job_id), default_queue)


def _read_all(taken_raw: list[tuple[bytes, bytes | None]], default_queue: str) -> list[TakenJob]:
    taken = []
    for raw, mark in taken_raw:
        try:
            job = read(raw, default_queue)
            job.cancel_mark = mark
            taken.append(job)
        except (ValueError, LookupError, TypeError) as exc:
            # Recorded and held: given back with the batch if it is interrupted, else its lease runs out.
            log.error("cannot read a taken message (%r); left recorded for its lease to give back", exc)
    return taken


def take(client: redis.Redis, lanes: list[str], room: int, ttl: int) -> list[TakenJob]:
    """Take the classify jobs waiting first in lanes (in that order) while their texts fit in room: recorded
    as this worker's, in one atomic step. Returns them read; one that cannot be read stays recorded (its
    lease gives it back) rather than being dropped."""
    if room <= 0 or not lanes:
        return []
    reply = scripts.TAKE(client, keys=[wire.UNACKED_KEY, wire.UNACKED_INDEX_KEY, holdings.holding_key,
                                       contract.WAKE_KEY, contract.MALFORMED_KEY, *lanes],
                         args=[time.time(), "mates", room, contract.CLASSIFY_TASK, contract.TEXTS_HEADER,
                               contract.DELIVERIES_KEY.format(""), ttl, contract.CANCEL_KEY.format("")])
    rest = reply[3:]
    taken = _read_all(list(zip(rest[:len(rest) // 2], rest[len(rest) // 2:])), lanes[0])
    holdings.add(job.held.tag for job in taken)
    return taken

