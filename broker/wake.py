"""Waking idle workers: one element on the wake list wakes one worker blocked on it.

An idle worker takes nothing from the lanes while it waits (a take must be one
atomic script, and a script cannot block): it blocks on ``BRPOP`` of the wake
list for at most ``brpop_timeout`` seconds, then takes (broker/transport.py).
Whoever makes a lane go from empty to holding a message rings once; the take
rings again while it leaves work behind, so a burst wakes one idle worker after
another, and clears the list when nothing is left. A lost ring (a process
killed between its push and its ring) costs at most one ``brpop_timeout`` of
latency, never a job: idle workers take on their own every ``brpop_timeout``.
"""
from __future__ import annotations

import logging

import redis

from inferq.contract import WAKE_KEY

log = logging.getLogger(__name__)


def ring(client: redis.Redis) -> None:
    """Wake one idle worker (best effort: workers also look on their own every brpop_timeout)."""
    try:
        client.rpush(WAKE_KEY, 1)
    except redis.RedisError as exc:
        log.warning("could not wake an idle worker (%s); one takes the job within a second", exc)


def rang_for(depth: int) -> bool:
    """Whether a push that left its lane depth long made the lane go from empty to not: then ring."""
    return depth == 1


def push(client: redis.Redis, queue: str, message: str) -> int:
    """Queue a message (LPUSH: kombu's lists hold the oldest on the right), ringing if the lane was empty.
    Returns the lane's length after it (raises redis errors: the message was not queued)."""
    depth = client.lpush(queue, message)
    if rang_for(depth):
        ring(client)
    return depth
