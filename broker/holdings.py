"""What one worker process holds: the messages it took and has not acknowledged, their leases, giving them back.

Every message a worker takes is in kombu's unacknowledged record from the instant
it leaves its queue (scripts.TAKE). The record's score in the index is a lease:
kombu's visibility-timeout scan gives back any message whose lease is older than
``visibility_timeout``. A live worker renews the leases of everything it holds
at every heartbeat (tasks/worker.py), so a job that runs longer than the
visibility timeout is never given to a second worker while its first still runs
(kombu#337, celery#4400): the timeout only bounds how long the jobs of a worker
that died, or stopped answering, wait.

The holding set (contract.HOLDING_KEY, per worker name) lets a worker restarted
under the same name give back at once what its dead predecessor held
(tasks/recovery.py).
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

import redis
from redis.utils import str_if_bytes as bytes_to_str

from inferq.broker.wake import ring
from inferq.broker.wire import UNACKED_INDEX_KEY, UNACKED_KEY
from inferq.contract import HOLDING_KEY, HOLDING_PLACEHOLDER

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Held:
    """A message this worker took: its delivery tag, the queue it came from and its text as it lay there."""

    tag: str
    queue: str
    raw: bytes


class Holdings:
    """The delivery tags this process holds (thread-safe: the heartbeat thread renews their leases)."""

    def __init__(self) -> None:
        self._tags: set[str] = set()
        self._lock = threading.Lock()
        # The messages the transport handed Celery, by job id, and those of them the task has acknowledged
        # in Redis itself (with its batch-mates, in one round trip): Celery's ack then only frees the slot.
        self._delivered: dict[str, str] = {}
        self._settled: set[str] = set()
        # Batch-mates the transport's take took with a job (each with its cancel mark, if any), until that
        # job's task claims them.
        self._stash: dict[str, list[tuple[bytes, bytes | None]]] = {}
        # The worker's node name once Celery sends it (tasks/worker.py); a unique stand-in until then.
        self.holder = f"{socket.gethostname()}-{os.getpid()}"
        # What is recorded under this worker's name may include messages it does not hold: a take whose
        # reply was lost (Redis restarted, the connection broke), a give-back that could not reach Redis.
        # The transport gives those strays back before its next take.
        self.out_of_step = False

    @property
    def holding_key(self) -> str:
        return HOLDING_KEY.format(self.holder)

    def add(self, tags: Iterable[str]) -> None:
        with self._lock:
            self._tags.update(tags)

    def discard(self, tags: Iterable[str]) -> None:
        """Forget messages this process no longer holds (acknowledged, given back)."""
        gone = set(tags)
        with self._lock:
            self._tags -= gone
            self._settled -= gone
            if any(tag in gone for tag in self._delivered.values()):
                self._delivered = {job: tag for job, tag in self._delivered.items() if tag not in gone}

    def delivered(self, job_id: str | None, tag: str) -> None:
        """The transport handed Celery the message of job_id (under tag)."""
        with self._lock:
            self._tags.add(tag)
            if job_id:
                self._delivered[job_id] = tag

    def stash(self, job_id: str | None, tags: list[str], mates: list[tuple[bytes, bytes | None]]) -> None:
        """Keep the batch-mates taken with job_id, (message, cancel mark) each, for its task (they are held:
        their leases are renewed)."""
        with self._lock:
            self._tags.update(tags)
            if job_id and mates:
                self._stash[job_id] = mates

    def claim(self, job_id: str) -> list[tuple[bytes, bytes | None]]:
        """The batch-mates taken with job_id, handed to its task once."""
        with self._lock:
            return self._stash.pop(job_id, [])

    def unclaimed(self) -> list[bytes]:
        """Batch-mates whose task never ran (Celery dropped or revoked its message): to give back."""
        with self._lock:
            raws = [raw for group in self._stash.values() for raw, _ in group]
            self._stash.clear()
            return raws

    def tag_of(self, job_id: str) -> str | None:
        """The delivery tag of the message Celery is running for job_id."""
        with self._lock:
            return self._delivered.get(job_id)

    def settled(self, tag: str) -> bool:
        """Whether the task acknowledged tag in Redis already (then Celery's ack only frees its slot)."""
        with self._lock:
            return tag in self._settled

    def tags(self) -> list[str]:
        with self._lock:
            return list(self._tags)

    def keep(self, client: redis.Redis, ttl: int) -> None:
        """Keep this worker's holding set, with an expiry (a worker that dies leaves it for ttl at most): set
        before the worker's first take, renewed at every heartbeat. The takes themselves never touch it."""
        with client.pipeline(transaction=False) as pipe:
            pipe.sadd(self.holding_key, HOLDING_PLACEHOLDER)
            pipe.expire(self.holding_key, ttl)
            pipe.execute()

    def renew(self, client: redis.Redis, ttl: int) -> int:
        """Renew the lease of every message held (only those still recorded: XX) and the holding set's expiry;
        return how many are held."""
        tags = self.tags()
        with client.pipeline(transaction=False) as pipe:
            if tags:
                pipe.zadd(UNACKED_INDEX_KEY, dict.fromkeys(tags, time.time()), xx=True)
            pipe.sadd(self.holding_key, HOLDING_PLACEHOLDER)
            pipe.expire(self.holding_key, ttl)
            pipe.execute()
        return len(tags)

    def strays(self, client: redis.Redis) -> list[str]:
        """Tags recorded under this worker's name that this process does not hold (see out_of_step). Called
        between jobs, when nothing else takes."""
        held = set(self.tags())
        recorded = (bytes_to_str(tag) for tag in client.smembers(self.holding_key))
        return [tag for tag in recorded if tag not in held and tag != HOLDING_PLACEHOLDER]

    def acknowledge(self, client: redis.Redis, tags: list[str], delivered: str | None = None) -> None:
        """Drop finished messages from the record (their results are stored): three commands for all of them.
        delivered: the tag of the message Celery delivered among them, whose ack Celery then need not write."""
        tags = tags + [delivered] if delivered else tags
        if not tags:
            return
        try:
            with client.pipeline(transaction=False) as pipe:
                pipe.hdel(UNACKED_KEY, *tags)
                pipe.zrem(UNACKED_INDEX_KEY, *tags)
                pipe.srem(self.holding_key, *tags)
                pipe.execute()
        except redis.RedisError as exc:
            # Their results are stored: at worst the visibility timeout gives them back and they
            # run again, stored once under the same ids (at-least-once).
            log.warning("could not acknowledge %d job(s): %s", len(tags), exc)
            return
        finally:
            self.discard(tags)
        if delivered:
            with self._lock:
                self._settled.add(delivered)

    def give_back(self, client: redis.Redis, held: list[Held]) -> None:
        """Put messages back at the head of their queues at once, as they were (their batch was interrupted:
        no delivery is counted, broker/transport.py).

        One transaction: each is back in its queue and out of the record together, so none is
        lost or doubled. If Redis cannot be reached they stay recorded, and the visibility timeout
        or this worker's restart gives them back.
        """
        if not held:
            return
        tags = [h.tag for h in held]
        try:
            with client.pipeline(transaction=True) as pipe:
                for h in reversed(held):  # the oldest ends up rightmost: taken first again
                    pipe.rpush(h.queue, h.raw)
                pipe.hdel(UNACKED_KEY, *tags)
                pipe.zrem(UNACKED_INDEX_KEY, *tags)
                pipe.srem(self.holding_key, *tags)
                pipe.execute()
            log.warning("gave back %d job(s) to the queue", len(held))
            ring(client)
        except redis.RedisError as exc:
            log.warning("could not give back %d job(s) (%s); they come back after the visibility timeout "
                        "or when this worker restarts", len(held), exc)
        finally:
            self.discard(tags)


holdings = Holdings()
"""This process's holdings: the transport adds what Celery delivers, the task what it takes into a batch."""
