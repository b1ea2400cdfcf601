"""One subscription per API process for every long-poll: results arrive as Redis publishes them.

Celery's Redis backend publishes each state it stores (STARTED, SUCCESS,
FAILURE) on a channel named after the result key. A long-poll used to open
its own subscription for that one channel: redis-py gives every PubSub its own
connection and closes it afterwards, so each ``GET /jobs/<id>?wait=N`` paid a
TCP connect, the AUTH and client handshake, SUBSCRIBE and UNSUBSCRIBE, several
round trips and a good part of the API's CPU per job (bench/RESULTS.md).

Here one thread per API process pattern-subscribes to every result channel
and hands each message to the requests waiting for that job. A waiter
registers before it reads the job's state, so a result stored between the
read and the wait still wakes it. While the listener is not connected (Redis
restarting), waiters fall back to re-reading every POLL_SECONDS, and every
waiter is woken when it (re)connects, so nothing published meanwhile is missed.

The trade-off: every API process receives every result's message, whether or
not one of its requests waits for it, so Redis sends each result once per API
process. For the few gunicorn processes of one orchestrator that is far less
than a connection per long-poll; an API scaled out to many hosts would want
per-job channels subscribed on one shared connection instead.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from contextlib import contextmanager

import redis

from inferq import redislink
from inferq.settings import RedisLink

log = logging.getLogger(__name__)

POLL_SECONDS = 0.25
"""How often a waiter re-reads the job's state while the listener is disconnected."""

HEALTH_CHECK_SECONDS = 5
"""An idle subscription is checked with a PING this often."""

RECONNECT_SECONDS = 0.5
"""Pause before the listener tries Redis again after losing it."""


class Watch:
    """One request waiting for one job: the latest payload published for it, if any."""

    def __init__(self):
        self._event = threading.Event()
        self._payload: bytes | None = None

    def deliver(self, payload: bytes | None) -> None:
        """A message for the job (None: something changed, read the state again)."""
        self._payload = payload
        self._event.set()

    def next(self, timeout: float) -> tuple[bool, bytes | None]:
        """Wait up to timeout: (woken, payload); payload None means "read it yourself"."""
        woken = self._event.wait(timeout)
        self._event.clear()
        payload, self._payload = self._payload, None
        return woken, payload


class ResultListener:
    """A daemon thread holding the process's one pattern subscription to result channels."""

    def __init__(self, link: RedisLink, key_prefix: bytes):
        # Its own client: a subscribed connection takes no other commands, and the
        # health check (a PING every few idle seconds) notices a Redis that froze
        # or vanished without closing the connection (with Sentinel, a primary that
        # was demoted or died: the next subscription finds the new one).
        self.client = redislink.client(
            link, link.backend, socket_timeout=link.timeout, socket_connect_timeout=link.timeout,
            health_check_interval=HEALTH_CHECK_SECONDS,
        )
        self.prefix = key_prefix  # Celery's result keys (and channels) start with it
        self.connected = threading.Event()
        self._watches: dict[str, set[Watch]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None

    @contextmanager
    def watch(self, job_id: str):
        """Register a waiter for job_id for the duration of the block."""
        self._ensure_running()
        watch = Watch()
        with self._lock:
            self._watches.setdefault(job_id, set()).add(watch)
        try:
            yield watch
        finally:
            with self._lock:
                watches = self._watches.get(job_id)
                if watches is not None:
                    watches.discard(watch)
                    if not watches:
                        del self._watches[job_id]

    def _ensure_running(self) -> None:
        # Started on first use, in the process that serves requests: gunicorn
        # forks its workers, and a thread does not survive a fork.
        if self._thread is not None and self._pid == os.getpid() and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid = os.getpid()
                self.connected.clear()
                self._thread = threading.Thread(target=self._run, name="inferq-results", daemon=True)
                self._thread.start()

    def _wake_all(self) -> None:
        with self._lock:
            watches = [w for ws in self._watches.values() for w in ws]
        for watch in watches:
            watch.deliver(None)

    def _run(self) -> None:
        pattern = self.prefix + b"*"
        while True:
            pubsub = self.client.pubsub()
            try:
                pubsub.psubscribe(pattern)
                # The subscription is live once Redis confirms it; only then can
                # waiters rely on messages instead of re-reading.
                while not self.connected.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message and message["type"] == "psubscribe":
                        self.connected.set()
                self._wake_all()  # anything stored while we were away
                while True:
                    message = pubsub.get_message(timeout=HEALTH_CHECK_SECONDS)
                    if message is None or message["type"] != "pmessage":
                        continue
                    job_id = message["channel"][len(self.prefix):].decode()
                    with self._lock:
                        watches = list(self._watches.get(job_id, ()))
                    for watch in watches:
                        watch.deliver(message["data"])
            except (redis.RedisError, OSError) as exc:
                if self.connected.is_set():
                    log.warning("result listener lost Redis (%s); long-polls re-read until it is back",
                                type(exc).__name__)
                self.connected.clear()
                self._wake_all()
                time.sleep(RECONNECT_SECONDS)
            finally:
                try:
                    pubsub.close()
                except (redis.RedisError, OSError):
                    pass
