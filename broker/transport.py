"""The workers' kombu transport: every take one atomic step, and acknowledgements that cannot wedge a worker.

**The take.** kombu's Redis transport consumes with ``BRPOP`` and then records the
message as unacknowledged in a second write. When Redis dies after the pop but
before its reply reaches the worker, or the worker dies between the reply and the
record, the message is in no list and no hash: lost. Here every take is
broker/scripts.TAKE, which moves the message from its queue into kombu's record
(and the worker's holding set) in one script. A script cannot block, so an idle
worker blocks on the wake list instead (``BRPOP inferq:wake``, at most
``brpop_timeout`` seconds: broker/wake.py) and takes when woken. The channel
alternates between those two commands on kombu's one consuming connection, driven
by kombu's poller exactly as its ``BRPOP`` is; an idle worker sends one of each per
``brpop_timeout``. After a take that left the lanes empty, the worker's next
command is the wait: whatever arrived while it ran its job rang the wake list (the
first push into an empty lane rings), so the wait returns at once, and when nothing
did, no take is spent on finding nothing. The same take also takes the jobs waiting behind the first
while their texts fit one forward pass (``batch_texts``); Celery is handed the
first, and its task claims the others (tasks/batching.py); any its task never
claims (Celery dropped the message) are given back before the next take. The
take also counts the delivery of a message given back after its worker died,
which reaches the task as a header (contract.DELIVERY_HEADER).

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

The worker selects this transport with Celery's ``broker_transport`` setting
(tasks/app.py): URLs stay ``redis://`` and Flower, which uses kombu's own, still
recognises the broker.

kombu internals this module relies on, read from kombu 5.7.0 (re-read them on an upgrade):
- ``Channel._brpop_start`` / ``_brpop_read``: the consume step ``MultiChannelPoller`` sends, then reads when the
  socket is readable; ``Channel._in_poll`` / ``_brpop_sent_at``: its view of that command (and its health check's)
- ``Channel._queue_cycle``: the consumed queues in ``queue_order_strategy`` order
- ``Channel.connection._deliver``: hands a message to the consumer's callback; ``Channel._flush_brpop_reauth``
- ``Channel._lookup``: the queues an exchange and routing key lead to
- ``QoS._delivered`` and ``virtual.QoS.append`` / ``ack``: the process's own books of delivered messages
- ``QoS.restore_visible`` calls ``restore_by_tag(tag, client)`` for each lease that ran out
"""
from __future__ import annotations

import logging
import time
from queue import Empty

import redis
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads

from inferq import contract
from inferq.broker import scripts, wire
from inferq.broker.holdings import holdings
from inferq.broker.wake import rang_for, ring

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


class Channel(kombu_redis.Channel):
    QoS = QoS

    #: Seconds an acknowledgement keeps trying to reach Redis before leaving the
    #: message to its lease (transport option ``ack_retry_seconds``).
    ack_retry_seconds = 5.0
    #: Seconds a restored message's delivery count and a worker's holding set are kept (``record_ttl``).
    record_ttl = 24 * 3600
    #: Texts one forward pass holds (``batch_texts``): a take takes the jobs waiting behind the first while
    #: their texts fit, for its task (tasks/batching.py); 1 takes one job at a time.
    batch_texts = 1

    from_transport_options = (*kombu_redis.Channel.from_transport_options,  # type: ignore[assignment]
                              "ack_retry_seconds", "record_ttl", "batch_texts")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._waiting = False  # the command in flight is the wait on the wake list, not a take
        # Send the take's script in full (EVAL, which also caches it) on a new connection and after one
        # broke (Redis may have restarted without it); by its SHA otherwise.
        self._send_source = True

    def basic_consume(self, queue, no_ack, *args, **kwargs):
        # Fanout queues (Celery's remote control, no_ack) arrive over pub/sub, never through a take.
        if no_ack and queue not in self._fanout_queues:
            raise ValueError(f"inferq's transport records every message it takes; consume {queue!r} with "
                             "acknowledgements (no_ack=False)")
        return super().basic_consume(queue, no_ack, *args, **kwargs)

    def _brpop_start(self, timeout=None):
        if not self.active_queues:
            return
        if self._waiting:
            wait = self.brpop_timeout if timeout is None else timeout
            command = ["BRPOP", contract.WAKE_KEY, wait or 0]
        else:
            command = self._take_command()
        self._in_poll = self.client.connection
        self._brpop_sent_at = time.monotonic()  # type: ignore[assignment]  # kombu declares it None
        self.client.connection.send_command(*command)

    def _give_back_unclaimed(self, raws: list[bytes]) -> None:
        """Give back, as they were, batch-mates taken with a job whose task never ran."""
        tags = [loads(bytes_to_str(raw))["properties"]["delivery_tag"] for raw in raws]
        try:
            with self.conn_or_acquire() as client:
                for tag in tags:
                    self.qos.restore_by_tag(tag, client=client, worker_died=False)
        except self.connection_errors:
            holdings.out_of_step = True  # recorded under this worker's name: the next take gives them back
        finally:
            holdings.discard(tags)
        log.warning("gave back %d job(s) taken with a job whose task did not run", len(tags))

    def _give_back_strays(self) -> None:
        """Give back, as they were, the jobs recorded for this worker that it does not hold (a take whose reply
        never came, a give-back that failed), rather than leave them to their lease (the visibility timeout)."""
        try:
            with self.conn_or_acquire() as client:
                tags = holdings.strays(client)
                for tag in tags:
                    self.qos.restore_by_tag(tag, client=client, worker_died=False)
        except self.connection_errors:
            return  # Redis is still away: next time
        holdings.out_of_step = False
        if tags:
            log.warning("gave back %d job(s) recorded for this worker that it did not hold (a take's reply or a "
                        "give-back was lost with Redis)", len(tags))

    def _take_command(self) -> list:
        """The next take's command; what this worker holds by mistake is given back first."""
        unclaimed = holdings.unclaimed()
        if unclaimed:
            self._give_back_unclaimed(unclaimed)
        if holdings.out_of_step:
            self._give_back_strays()
        queues = self._queue_cycle.consume(len(self.active_queues))
        return scripts.TAKE.command(
            keys=[self.unacked_key, self.unacked_index_key, holdings.holding_key, contract.WAKE_KEY,
                  contract.MALFORMED_KEY, *queues],
            args=[time.time(), "first", self.batch_texts, contract.CLASSIFY_TASK, contract.TEXTS_HEADER,
                  contract.DELIVERIES_KEY.format(""), self.record_ttl, contract.CANCEL_KEY.format("")],
            full=self._send_source)

    def _brpop_read(self, **options):
        connection = self.client.connection
        try:
            try:
                if self._waiting:
                    # Woken, or the wait ran out: take at once, on the same connection (a take is a script,
                    # its reply comes without blocking), rather than on the event loop's next turn.
                    self.client.parse_response(connection, "BRPOP", **options)
                    self._waiting = False
                    connection.send_command(*self._take_command())
                reply = self.client.parse_response(connection, "EVALSHA", **options)
            except self.connection_errors:
                # Disconnect so the next iteration reconnects (as kombu does). What a take whose reply
                # was lost took is recorded under this worker's name: given back before the next take.
                connection.disconnect()
                self._send_source = True
                holdings.out_of_step = holdings.out_of_step or not self._waiting
                raise
            except redis.exceptions.NoScriptError:
                self._send_source = True  # Redis restarted and lost the script: the next take sends it
                raise Empty() from None
            except redis.ResponseError as exc:
                # Refused (Redis at its maxmemory, say): nothing was taken. Wait before trying again.
                log.warning("could not take a job (%s); trying again in %ss", exc, self.brpop_timeout)
                self._waiting = True
                raise Empty() from None
            self._send_source = False
            deliveries, work_left, lane, *taken = reply
            if not taken:
                self._waiting = True
                raise Empty()
            # Nothing was left behind this take: after this job, wait on the wake list rather than take
            # again (anything pushed meanwhile rang it, as the first push into an empty lane rings).
            self._waiting = not work_left
            messages, marks = taken[:len(taken) // 2], taken[len(taken) // 2:]
            payload = loads(bytes_to_str(messages[0]))
            payload["headers"][contract.DELIVERY_HEADER] = int(deliveries)
            if marks[0] is not None:
                payload["headers"][contract.CANCEL_HEADER] = bytes_to_str(marks[0])
            mates = list(zip(messages[1:], marks[1:]))
            holdings.stash(payload["headers"].get("id"),
                           [loads(bytes_to_str(raw))["properties"]["delivery_tag"] for raw, _ in mates], mates)
            self.connection._deliver(payload, bytes_to_str(lane))
            return True
        finally:
            self._in_poll = None  # type: ignore[assignment]  # as kombu does
            self._flush_brpop_reauth()

    def _put(self, queue, message, **kwargs):
        """Publish (a callback's delivery, a retried task), ringing the wake list if its queue was empty."""
        if kwargs.get("_publish_batch") is not None or queue in self._expires:
            return super()._put(queue, message, **kwargs)  # batches and expiring queues: kombu's own
        with self.conn_or_acquire() as client:
            depth = client.lpush(self._q_for_pri(queue, self._get_message_priority(message, reverse=False)),
                                 dumps(message))
            if rang_for(depth):
                ring(client)


class Transport(kombu_redis.Transport):
    Channel = Channel

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if (getattr(self.client, "transport_options", None) or {}).get("global_keyprefix"):
            raise ValueError("inferq's transport takes with scripts that name their keys: global_keyprefix "
                             "is not supported")
