"""Job records in Redis: which ids the API issued, and their state from Celery's results.

Celery reports any unknown task id as PENDING, so the API keeps its own record
of every id it issued, for as long as results are kept: an id without a
record is 404, never an endless "queued".
"""
from __future__ import annotations

import json
import time
from typing import Any, NamedTuple

from redis.backoff import NoBackoff
from redis.retry import Retry

from inferq import jobview, redislink
from inferq.api.results import POLL_SECONDS, ResultListener, Watch
from inferq.broker import scripts, wake
from inferq.broker.wire import RESULT_KEY_PREFIX, UNACKED_KEY, result_key, revoked_state
from inferq.contract import CALLBACK_KEY, CANCEL_KEY, CANCELLED_KEY, JOB_KEY, SUBMITTED_KEY, WAKE_KEY
from inferq.jobview import STATUS_OF_STATE, TERMINAL
from inferq.settings import RedisLink

__all__ = ["STATUS_OF_STATE", "TERMINAL", "JobStore", "Load"]

MEMORY_READ_SECONDS = 0.5
"""How long Redis's memory figures, read with INFO, stand for the memory check of each submit.
INFO is one command more per job otherwise. Far from the limit, half a second of submits cannot
reach it; close to it (MEMORY_CLOSE of maxmemory, counting what this process wrote since the last
reading) every submit reads it again, so the 429 still comes before Redis refuses a write."""

MEMORY_CLOSE = 0.4
"""Share of maxmemory from which every submit reads Redis's memory (half of the default 0.8 threshold)."""


class Load(NamedTuple):
    """What admission control needs, read in the round trip that queued the job: its lane's depth and Redis's
    memory."""

    depth: int  # the lane's length with this job in it (0: not queued yet)
    used_memory: int
    maxmemory: int  # 0: no limit
    replicated: bool = True  # the replicas the link asks for (WAIT) hold the record and the message


class JobStore:
    """Read and write job records beside Celery's result backend."""

    def __init__(self, link: RedisLink):
        self.ttl = link.result_ttl
        self.redis = redislink.client(
            link, link.backend,
            socket_timeout=link.timeout,
            socket_connect_timeout=link.timeout,
            # redis-py retries with backoff by default (seconds); the API must
            # answer 503 within 2 s when Redis is away, so fail on the first error.
            retry=Retry(NoBackoff(), 0),
        )
        self.listener = ResultListener(link, RESULT_KEY_PREFIX.encode())
        # With replication, a job counts as accepted once this many replicas hold it (WAIT, in the round trip
        # that wrote it: WAIT waits for what its own connection wrote).
        self.replicas, self.replica_timeout_ms = link.replicas_to_wait, int(link.replica_timeout * 1000)
        self._memory = (0, 0)  # Redis's used_memory and maxmemory, as last read
        self._memory_read_at = -MEMORY_READ_SECONDS
        self._written = 0  # bytes of jobs this process queued since it last read the memory
        self._quiet: dict[str, bool] = {}  # per lane: this process's last push found it empty

    def create(self, job_id: str, n_texts: int, owner: str | None, queue: str, queued_at: float,
               lane: str = "", callback_url: str | None = None, message: str | None = None) -> Load:
        """Record a job and count it submitted, and queue its message if given; return its lane's depth (with
        it) and Redis's memory.

        One round trip: the record (owner: its API key's fingerprint), the submitted
        counter, Redis's memory (admission control; at most every MEMORY_READ_SECONDS)
        and the message's push (its reply is the lane's depth) go in one pipeline, in
        that order. A caller that then refuses the job withdraws it (withdraw()) and
        drops its record (forget()).
        """
        record: dict[str, Any] = {"queued_at": queued_at, "texts": n_texts}
        if lane:
            record["lane"] = lane
        if owner is not None:
            record["owner"] = owner
        if callback_url is not None:
            record["callback_url"] = callback_url
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(JOB_KEY.format(job_id), json.dumps(record), ex=self.ttl)
        pipe.incr(SUBMITTED_KEY)
        if callback_url is not None:
            pipe.set(CALLBACK_KEY.format(job_id), json.dumps({"url": callback_url, "state": "pending", "attempts": 0}),
                     ex=self.ttl)
        used, limit = self._memory
        self._written += 2 * 1024 + (len(message) if message else 128 * n_texts)
        # Near the limit (by what this process wrote since), read it for every submit.
        read_memory = (time.monotonic() - self._memory_read_at >= MEMORY_READ_SECONDS
                       or (limit and used + self._written >= MEMORY_CLOSE * limit))
        if read_memory:
            pipe.info("memory")
        rang = message is not None and self._queue(pipe, queue, message)
        waited = message is not None and self._wait(pipe)  # without a message, claim_and_push() waits
        replies = pipe.execute()
        replicated = self._replicated(replies.pop()) if waited else True
        depth = 0
        if message is not None:
            depth = self._woke(queue, int(replies[-1 - rang]), rang)
            del replies[-1 - rang:]
        if read_memory:
            memory = replies[-1]
            self._memory = (int(memory.get("used_memory", 0)), int(memory.get("maxmemory", 0)))
            self._memory_read_at, self._written = time.monotonic(), 0
        return Load(depth, *self._memory, replicated=replicated)

    def claim_and_push(self, queue: str, message: str, claim: str, claim_value: str) -> tuple[bytes | None, int, bool]:
        """Claim a submit's Idempotency-Key (claim: its Redis key) and queue its job's message in one atomic step
        (broker/scripts.CLAIM_AND_QUEUE), then WAIT for the replicas, in one round trip. Returns the claim that
        won if another request's did (nothing queued then), else None; the lane's depth with the job; whether
        the replicas hold it."""
        rang = self._quiet.get(queue, True)
        replies = scripts.CLAIM_AND_QUEUE.piped(self.redis, keys=[claim, queue, WAKE_KEY],
                                                args=[claim_value, self.ttl, message, int(rang)], then=self._wait)
        (claimed, value), replicated = replies[0], self._replicated(replies[-1]) if len(replies) > 1 else True
        if not claimed:
            return value, 0, True
        return None, self._woke(queue, int(value), rang), replicated

    def _wait(self, pipe: Any) -> bool:
        """End pipe with a WAIT for the replicas the link asks for; False when it asks for none. WAIT returns once
        the replicas reached its connection's last write in the one replication stream, so every write before
        it (the record, written by an earlier round trip on whichever connection) is on them too."""
        if not self.replicas:
            return False
        pipe.wait(self.replicas, self.replica_timeout_ms)
        return True

    def _replicated(self, acknowledged: int) -> bool:
        """Whether a WAIT's reply (replicas that acknowledged) is enough."""
        return int(acknowledged) >= self.replicas

    def _queue(self, pipe: Any, queue: str, message: str) -> bool:
        """Add the message's push to pipe, and the wake-up of an idle worker if the lane is likely empty (this
        process's last push found it so): idle workers then wake in the same round trip. Returns whether it
        rang."""
        pipe.lpush(queue, message)
        if self._quiet.get(queue, True):
            pipe.rpush(WAKE_KEY, 1)
            return True
        return False

    def _woke(self, queue: str, depth: int, rang: bool) -> int:
        """After a push left its lane depth long: ring if the lane was empty and the push did not (a second
        round trip, only when the guess was wrong). A ring that finds no work costs an idle worker one take."""
        self._quiet[queue] = depth <= 1
        if not rang and wake.rang_for(depth):
            wake.ring(self.redis)
        return depth

    def withdraw(self, queue: str, message: str, claim: str | None = None, release: str = "withdrawn") -> bool:
        """Take a refused job's message off its queue again; False if a worker took it first (it runs). claim: its
        Idempotency-Key's claim, released in the same atomic step ('always', or only if 'withdrawn')."""
        keys = [queue, claim] if claim else [queue]
        return scripts.WITHDRAW(self.redis, keys=keys, args=[message, release]) == 1

    def forget(self, job_id: str) -> None:
        """Drop the record (and the count) of a job that was not enqueued after all."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.delete(JOB_KEY.format(job_id), CALLBACK_KEY.format(job_id))
        pipe.decr(SUBMITTED_KEY)
        pipe.execute()

    def record_and_meta(self, job_id: str) -> tuple[dict | None, dict[str, Any], dict | None]:
        """The API's record of a job (None if it never issued the id or it expired), its state and its
        callback's state, in one round trip."""
        return jobview.read(self.redis, job_id)

    def meta(self, job_id: str) -> dict[str, Any]:
        """The job's state: Celery's stored result, else cancel requested, else STARTED if a worker took it,
        else PENDING."""
        # Read through our own client rather than Celery's backend: the backend
        # retries while Redis is away (result_backend_always_retry, which workers
        # need), and a poll must fail within the 503 bound instead.
        return jobview.read_state(self.redis, job_id)

    def _state(self, raw_meta) -> dict[str, Any]:
        """A job's state from its raw result as published."""
        return jobview.state(raw_meta)

    def wait(self, job_id: str, seconds: float, meta: dict[str, Any] | None = None) -> dict[str, Any]:
        """Return the job's meta once it is finished, or when seconds pass.

        meta: the state the caller has just read, if any (saves a read).
        """
        if meta is None:
            meta = self.meta(job_id)
        if seconds <= 0 or STATUS_OF_STATE.get(meta["status"]) in TERMINAL:
            return meta
        # Watch first, then read again: a result stored in between is not missed.
        with self.listener.watch(job_id) as watch:
            return self.wait_watched(watch, job_id, seconds, self.meta(job_id))

    def wait_watched(self, watch: Watch, job_id: str, seconds: float, meta: dict[str, Any]) -> dict[str, Any]:
        """Wait on a watch registered before meta was read (or before the job was queued) until the job is
        finished or seconds pass; return its latest meta."""
        deadline = time.monotonic() + seconds
        while STATUS_OF_STATE.get(meta["status"]) not in TERMINAL:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            # With the listener down, re-read now and then instead of trusting messages.
            timeout = remaining if self.listener.connected.is_set() else min(remaining, POLL_SECONDS)
            woken, payload = watch.next(timeout)
            if payload is not None:
                meta = self._state(payload)
            elif woken or not self.listener.connected.is_set():
                meta = self.meta(job_id)
        return meta


def revoked_meta(job_id: str, reason: str = "cancelled") -> str:
    """A job's state as Celery stores a revoked task's (the shape the workers write too, JSON)."""
    from datetime import UTC, datetime

    return json.dumps(revoked_state(job_id, reason, datetime.now(UTC).isoformat()))


def cancel(store: JobStore, job_id: str) -> tuple[str, dict[str, Any] | None]:
    """Ask to cancel a job; return what happened and, when it had a result already, its state.

    "queued": no worker had started it: it is cancelled now (a REVOKED result is
    stored and published, which wakes long-polls); "running": a worker runs it,
    which will discard its result; "marked": cancelled (or asked to be) before;
    "final": it has a result already (the state says which). Atomic against a worker taking the job
    (broker/scripts.CANCEL).
    """
    outcome, raw = scripts.CANCEL(
        store.redis, keys=[result_key(job_id), UNACKED_KEY, CANCEL_KEY.format(job_id), CANCELLED_KEY],
        args=[store.ttl, revoked_meta(job_id), job_id])
    outcome = outcome.decode()
    if outcome == "final":
        return outcome, jobview.state(raw)
    if outcome == "marked":
        return outcome, jobview.state(None, False, raw)
    return outcome, None
