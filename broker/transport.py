"""The workers' kombu transport: every take one atomic step (acknowledgements and give-backs: broker/qos.py).

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
did, no take is spent on finding nothing.

The same take also takes the jobs waiting behind the first while their texts fit
one forward pass (``batch_texts``); Celery is handed the first, and its task
claims the others (tasks/batching.py); any its task never claims (Celery dropped
the message) are given back before the next take. The take also counts the
delivery of a message given back after its worker died, and reads the cancel
marks of what it takes: both reach the task as headers (contract.DELIVERY_HEADER,
CANCEL_HEADER).

The worker selects this transport with Celery's ``broker_transport`` setting
(tasks/app.py): URLs stay ``redis://`` and Flower, which uses kombu's own, still
recognises the broker.

kombu internals this module relies on, read from kombu 5.7.0 (re-read them on an upgrade):
- ``Channel._brpop_start`` / ``_brpop_read``: the consume step ``MultiChannelPoller`` sends, then reads when the
  socket is readable; ``Channel._in_poll`` / ``_brpop_sent_at``: its view of that command (and its health check's)
- ``Channel._queue_cycle``: the consumed queues in ``queue_order_strategy`` order
- ``Channel.connection._deliver``: hands a message to the consumer's callback; ``Channel._flush_brpop_reauth``
"""
from __future__ import annotations

import logging
import time
from queue import Empty

import redis
import redis.sentinel
from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads

from inferq import contract
from inferq.broker import scripts
from inferq.broker.holdings import holdings
from inferq.broker.qos import QoS
from inferq.broker.wake import rang_for, ring

log = logging.getLogger(__name__)

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

    def _take_command(self) -> list:
        """The next take's command; what this worker holds by mistake is given back first."""
        unclaimed = holdings.unclaimed()
        if unclaimed:
            self.qos.give_back_unclaimed(unclaimed)
        if holdings.out_of_step:
            self.qos.give_back_strays()
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


class SentinelChannel(Channel, kombu_redis.SentinelChannel):
    """The same takes, acknowledgements and give-backs, on the primary that kombu's Sentinel channel finds.

    kombu's SentinelChannel only changes how the connection pool is made (Sentinel's ``master_for``, with
    SentinelManagedConnection): a connection to a primary that died or was demoted (READONLY) fails with
    ConnectionError, which _brpop_read above and QoS's retries treat as Redis being away; Celery then
    reconnects, and the new pool asks the Sentinels for the new primary. The take's script is sent in full
    on every new connection, so a new primary that never saw it runs it too.

    The Sentinels come from the transport option ``sentinels`` (redislink.master_transport_options), not from
    a ';'-separated broker URL as kombu's own channel reads them: given several URLs, kombu's Connection
    switches to the next after a failed connect and takes its transport from that URL's scheme, which would
    replace this transport with kombu's own (BRPOP, a take in two steps) in a worker that lost its primary.
    A worker's broker URL is therefore one Sentinel's (redislink.worker_broker_url).
    """

    #: (host, port) of every Sentinel (transport option ``sentinels``).
    sentinels: tuple = ()
    #: The primary's name (transport option ``master_name``; kombu's channel reads it with getattr too).
    master_name: str | None = None

    from_transport_options = (*Channel.from_transport_options,  # type: ignore[assignment]
                              *(option for option in kombu_redis.SentinelChannel.from_transport_options
                                if option not in Channel.from_transport_options), "sentinels")

    def _sentinel_managed_pool(self, asynchronous=False):
        if not self.sentinels:
            return super()._sentinel_managed_pool(asynchronous)
        if self.master_name is None:
            raise ValueError("'master_name' transport option must be specified.")
        # kombu 5.7.0's, with the Sentinels of the transport option. Over TLS (broker_use_ssl), params carry the
        # primary's: kombu's SentinelManagedSSLConnection and the CA check; the Sentinels' own TLS is in
        # sentinel_kwargs (redislink.master_transport_options), which redis-py never fills from params.
        params = self._connparams(asynchronous)
        params.pop("host", None)
        params.pop("port", None)
        manager = redis.sentinel.Sentinel([tuple(address) for address in self.sentinels],
                                          min_other_sentinels=getattr(self, "min_other_sentinels", 0),
                                          sentinel_kwargs=getattr(self, "sentinel_kwargs", None), **params)
        if asynchronous:
            self._async_sentinel_manager = manager
        else:
            self._sentinel_manager = manager
        credentials = {key: params[key] for key in ("username", "password") if key in params}
        return manager.master_for(self.master_name, redis.Redis, **credentials).connection_pool


class SentinelTransport(Transport):
    """inferq's transport over Sentinel (``sentinel://`` broker URLs, ``master_name`` in the transport options)."""

    Channel = SentinelChannel
    default_port = kombu_redis.SentinelTransport.default_port  # type: ignore[assignment]  # kombu declares None
