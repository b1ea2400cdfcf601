"""kombu's Redis transport, with acknowledgements that cannot wedge a worker.

kombu's Redis QoS acknowledges a message in two steps: it removes the message
from its unacknowledged index in Redis, then frees the worker's prefetch slot.
When the Redis write fails (Redis frozen or restarting, the network cut at
that moment) the exception skips the second step. Celery logs "Couldn't ack"
and carries on, but with prefetch 1 the worker now believes it holds a message
for ever and never fetches another, while its heartbeat and its Celery ping
still answer: a worker that looks healthy and does nothing. Our fault tests
hit it (Redis stopped with SIGSTOP under load, CI of 2026-11-27) and others
report it upstream (celery/celery#8030, #10205; packit-service#2697).

Here the Redis write is retried for a short, bounded time, and the prefetch
slot is freed whatever happens. The receipt (the write that records a message
BRPOP just took as unacknowledged) is retried the same way: a Redis killed
between the two would otherwise lose that message (see QoS.append). A message whose acknowledgement never reached
Redis stays in the unacknowledged index, so Redis gives it back after the
visibility timeout and it runs again: at-least-once still holds, and the rerun
stores its result under the same job id. Rejections (a job given back to the
queue) get the same treatment.

``register()`` points kombu's ``redis`` scheme at this transport, so broker
URLs stay ``redis://`` and Flower still recognises the broker.
"""
from __future__ import annotations

import logging
import time

import redis
from kombu import transport as kombu_transports
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.json import dumps

log = logging.getLogger(__name__)

RETRY_PAUSE_SECONDS = 0.2
"""Pause between attempts to reach Redis while acknowledging."""

_REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError, OSError)


class QoS(kombu_redis.QoS):
    """Redis ack emulation whose ack and reject always free the prefetch slot, and whose receipt waits for Redis."""

    def append(self, message, delivery_tag):
        # kombu takes a message with BRPOP and records it as unacknowledged in a
        # second write. If Redis dies between the two (killed, then restarted from
        # its AOF), the message is in neither place: only this process holds it.
        # kombu lets the write fail and drops it; here the write is retried while
        # Redis comes back, so the message is recorded and runs. Past the bound it
        # is lost as before (Redis away for longer than ack_retry_seconds exactly
        # then).
        delivery = message.delivery_info
        entry = dumps([message._raw, delivery["exchange"], delivery["routing_key"]])

        def record():
            with self.channel.conn_or_acquire() as client:
                with client.pipeline() as pipe:
                    pipe.zadd(self.unacked_index_key, {delivery_tag: time.time()})
                    pipe.hset(self.unacked_key, delivery_tag, entry)
                    pipe.execute()

        # Past the bound it still runs here, unrecorded: its result is stored if
        # Redis comes back, and nothing gives it back if this worker dies first.
        self._with_retry("record the receipt of", delivery_tag, record,
                         "it runs here unrecorded: lost if this worker dies before storing its result")
        virtual.QoS.append(self, message, delivery_tag)

    def ack(self, delivery_tag):
        try:
            self._with_retry("acknowledge", delivery_tag,
                             lambda: self._remove_from_indices(delivery_tag).execute())
        finally:
            virtual.QoS.ack(self, delivery_tag)

    def reject(self, delivery_tag, requeue=False):
        try:
            if requeue:
                self._with_retry("give back", delivery_tag,
                                 lambda: self.restore_by_tag(delivery_tag, leftmost=True))
            else:
                self._with_retry("reject", delivery_tag,
                                 lambda: self._remove_from_indices(delivery_tag).execute())
        finally:
            virtual.QoS.ack(self, delivery_tag)

    def _with_retry(self, action: str, delivery_tag, write,
                    then: str = "it stays unacknowledged in Redis and is given back after the visibility timeout",
                    ) -> None:
        """Run a Redis write, retrying while Redis is unreachable, for at most ack_retry_seconds."""
        deadline = time.monotonic() + self.channel.ack_retry_seconds
        while True:
            try:
                write()
                return
            except _REDIS_DOWN as exc:
                if time.monotonic() + RETRY_PAUSE_SECONDS >= deadline:
                    log.warning("could not %s message %s (%s: Redis unreachable for %.1fs); %s", action,
                                delivery_tag, type(exc).__name__, self.channel.ack_retry_seconds, then)
                    return
                time.sleep(RETRY_PAUSE_SECONDS)


class Channel(kombu_redis.Channel):
    QoS = QoS

    #: Seconds an acknowledgement keeps trying to reach Redis before leaving the
    #: message to the visibility timeout (transport option ``ack_retry_seconds``).
    ack_retry_seconds = 5.0

    from_transport_options = (*kombu_redis.Channel.from_transport_options, "ack_retry_seconds")  # type: ignore[assignment]


class Transport(kombu_redis.Transport):
    Channel = Channel


def register() -> None:
    """Make ``redis://`` (and ``rediss://``) broker URLs use this transport, in this process."""
    for scheme in ("redis", "rediss"):
        kombu_transports.TRANSPORT_ALIASES[scheme] = f"{__name__}:Transport"
