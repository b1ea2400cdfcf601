"""The workers' acknowledgements and give-backs, over the atomic take (broker/transport.py).

**Give-backs.** Every give-back goes through ``QoS.restore_by_tag``. A message a
live worker gives back (SIGTERM, a rejected job) goes back as it was; one given back
because its worker died (its lease ran out, or the worker restarted under its name)
is marked redelivered, which the next take counts. Both go to the head of their
queue (taken next) and ring the wake list.

**Acknowledgements.** kombu's QoS acknowledges in two steps: it removes the
message from its record in Redis, then frees the worker's prefetch slot. When the
Redis write fails, the exception skips the second step, and with prefetch 1 the
worker believes it holds a message for ever: it never fetches again while its
heartbeat and ping still answer (celery/celery#8030, #10205). Here the Redis write
is retried for a short, bounded time, and the slot is freed whatever happens. A
message whose acknowledgement never reached Redis stays recorded; its lease runs
out and it runs again, stored once under its id.

kombu internals this module relies on, read from kombu 5.7.0 (re-read them on an upgrade):
- ``QoS._delivered`` and ``virtual.QoS.append`` / ``ack``: the process's own books of delivered messages
- ``QoS.restore_visible`` calls ``restore_by_tag(tag, client)`` for each lease that ran out
- ``Channel._lookup``: the queues an exchange and routing key lead to
"""
from __future__ import annotations

import logging
import time

import redis
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads

from inferq.broker import wire
from inferq.broker.holdings import holdings
from inferq.broker.wake import ring

log = logging.getLogger(__name__)

RETRY_PAUSE_SECONDS = 0.2
"""Pause between attempts to reach Redis while acknowledging."""

_REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError, OSError)


class QoS(kombu_redis.QoS):
    """Redis ack emulation over the atomic take: nothing to record on delivery, acks that always free the slot."""

    def append(self, message, delivery_tag):
        # The take recorded the message in the same step as it left its queue: only this process's books.
        virtual.QoS.append(self, message, delivery_tag)
        holdings.delivered(message.headers.get("id"), delivery_tag)

    def ack(self, delivery_tag):
        try:
            if not holdings.settled(delivery_tag):  # else the task acknowledged it with its batch-mates
                self._with_retry("acknowledge", delivery_tag, lambda: self._forget(delivery_tag))
        finally:
            virtual.QoS.ack(self, delivery_tag)
            holdings.discard([delivery_tag])

    def reject(self, delivery_tag, requeue=False):
        try:
            if requeue:
                self._with_retry("give back", delivery_tag,
                                 lambda: self.restore_by_tag(delivery_tag, worker_died=False))
            else:
                self._with_retry("reject", delivery_tag, lambda: self._forget(delivery_tag))
        finally:
            virtual.QoS.ack(self, delivery_tag)
            holdings.discard([delivery_tag])

    def restore_unacked(self, client=None):
        # Called as the channel closes (a worker leaving, SIGTERM included): a live worker gives back.
        self._flush()  # drop what was acknowledged meanwhile
        tags, errors = list(self._delivered), []
        with self.channel.conn_or_acquire(client) as client:
            for tag in tags:
                try:
                    self.restore_by_tag(tag, client=client, worker_died=False)
                except Exception as exc:  # still recorded: the next take gives it back, else its lease
                    errors.append((exc, self._delivered[tag]))
                    holdings.out_of_step = True
        self._delivered.clear()
        holdings.discard(tags)
        return errors

    def restore_by_tag(self, tag, client=None, leftmost=False, worker_died=True):
        """Put a recorded message back at the head of its queue and out of the record, in one transaction.

        worker_died: it is given back because its worker died (marked redelivered: the next take counts a
        delivery); else a live worker gives it back as it was. kombu's leftmost is ignored: a given-back
        job goes first, having waited longest.
        """
        channel = self.channel
        found = []

        def restore(pipe):
            raw = pipe.hget(self.unacked_key, tag)
            pipe.multi()
            pipe.zrem(self.unacked_index_key, tag)
            pipe.hdel(self.unacked_key, tag)
            if not worker_died:
                pipe.srem(holdings.holding_key, tag)
            if raw:
                message, exchange, routing_key = wire.read_unacked_entry(raw)
                if worker_died:
                    wire.mark_redelivered(message)
                for queue in channel._lookup(exchange, routing_key):
                    pipe.rpush(queue, dumps(message))
                found.append(raw)

        with channel.conn_or_acquire(client) as client:
            client.transaction(restore, self.unacked_key)
            if found:
                ring(client)

    def _forget(self, delivery_tag) -> None:
        """Drop a message from the record (acknowledged or rejected): one round trip."""
        with self.channel.conn_or_acquire() as client:
            with client.pipeline(transaction=False) as pipe:
                pipe.zrem(self.unacked_index_key, delivery_tag)
                pipe.hdel(self.unacked_key, delivery_tag)
                pipe.srem(holdings.holding_key, delivery_tag)
                pipe.execute()

    def _with_retry(self, action: str, delivery_tag, write) -> None:
        """Run a Redis write, retrying while Redis is unreachable, for at most ack_retry_seconds."""
        deadline = time.monotonic() + self.channel.ack_retry_seconds
        while True:
            try:
                write()
                return
            except _REDIS_DOWN as exc:
                if time.monotonic() + RETRY_PAUSE_SECONDS >= deadline:
                    log.warning("could not %s message %s (%s: Redis unreachable for %.1fs); it stays recorded "
                                "and is given back when its lease runs out", action, delivery_tag,
                                type(exc).__name__, self.channel.ack_retry_seconds)
                    return
                time.sleep(RETRY_PAUSE_SECONDS)

    def give_back_unclaimed(self, raws: list[bytes]) -> None:
        """Give back, as they were, batch-mates taken with a job whose task never ran."""
        tags = [loads(bytes_to_str(raw))["properties"]["delivery_tag"] for raw in raws]
        try:
            with self.channel.conn_or_acquire() as client:
                for tag in tags:
                    self.restore_by_tag(tag, client=client, worker_died=False)
        except self.channel.connection_errors:
            holdings.out_of_step = True  # recorded under this worker's name: the next take gives them back
        finally:
            holdings.discard(tags)
        log.warning("gave back %d job(s) taken with a job whose task did not run", len(tags))

    def give_back_strays(self) -> None:
        """Give back, as they were, the jobs recorded for this worker that it does not hold (a take whose reply
        never came, a give-back that failed), rather than leave them to their lease (the visibility timeout)."""
        try:
            with self.channel.conn_or_acquire() as client:
                tags = holdings.strays(client)
                for tag in tags:
                    self.restore_by_tag(tag, client=client, worker_died=False)
        except self.channel.connection_errors:
            return  # Redis is still away: next time
        holdings.out_of_step = False
        if tags:
            log.warning("gave back %d job(s) recorded for this worker that it did not hold (a take's reply or a "
                        "give-back was lost with Redis)", len(tags))
