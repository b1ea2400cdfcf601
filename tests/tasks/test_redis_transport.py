"""An acknowledgement that cannot reach Redis must not leave the worker unable to fetch.

Real Redis, real kombu consumers with prefetch 1 (as the workers run): a
message is delivered, Redis goes away, the consumer acknowledges it (or gives
it back). kombu's own transport keeps the prefetch slot taken for ever (the bug
tasks/redis_transport.py exists for); ours frees it, and the message, still
unacknowledged in Redis, is delivered again after the visibility timeout.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from kombu import Connection, Queue
from kombu.transport import redis as kombu_redis

from inferq.stack.redis_server import RedisServer
from inferq.tasks import redis_transport

# As celeryconfig.py sets them: every poll scans for messages past the visibility timeout
# (kombu's default throttle scans one poll in ten: about every 5 s here, which made the
# redelivery below miss its bound under load), and the scan's lock expires after half
# the timeout, so a lock restored from the AOF cannot hold the message for 300 s.
OPTIONS = {"socket_timeout": 0.3, "socket_connect_timeout": 0.3, "ack_retry_seconds": 0.5,
           "visibility_timeout": 2, "unacked_restore_interval": 1, "unacked_restore_throttle": 1,
           "unacked_mutex_expire": 1}


@pytest.fixture
def redis(tmp_path):
    # appendfsync always: what the delivery wrote survives the test's kill -9.
    server = RedisServer(tmp_path / "redis", appendfsync="always").start()
    yield server
    if server.process and server.process.poll() is None:
        os.kill(server.process.pid, signal.SIGCONT)
    server.stop()


def connect(server: RedisServer, transport=redis_transport.Transport) -> Connection:
    return Connection(server.url, transport=transport, transport_options=OPTIONS)


def deliver_one(connection: Connection, queue: Queue, body: str = "job", timeout: float = 5):
    """Publish body (unless None) and take one message with prefetch 1, unacknowledged."""
    if body is not None:
        connection.Producer(serializer="json").publish(body, routing_key=queue.name, declare=[queue])
    channel = connection.channel()
    channel.basic_qos(prefetch_count=1)
    received = []
    consumer = connection.Consumer(queue, channel=channel, callbacks=[lambda b, m: received.append(m)])
    consumer.consume()
    deadline = time.monotonic() + timeout
    while not received and time.monotonic() < deadline:
        try:
            connection.drain_events(timeout=0.5)
        except TimeoutError:
            pass
    assert received, "no message was delivered"
    return channel, received[0]


@pytest.mark.parametrize("action", ["ack", "requeue"])
def test_ack_with_redis_down_frees_the_slot_and_the_message_comes_back(redis, action):
    queue = Queue(f"jobs-{action}")
    with connect(redis) as connection:
        channel, message = deliver_one(connection, queue)
        assert not channel.qos.can_consume()  # prefetch 1: the slot is taken
        redis.kill()
        started = time.monotonic()
        message.ack() if action == "ack" else message.reject(requeue=True)
        took = time.monotonic() - started
        assert channel.qos.can_consume(), "the slot stayed taken: this worker would never fetch again"
        assert took < OPTIONS["ack_retry_seconds"] + 2, "the acknowledgement held the worker too long"
    # Redis back from its AOF: the message was never acknowledged there, so it is
    # held for redelivery and a consumer gets it again after the visibility timeout.
    redis.start()
    assert redis.client().hlen("unacked") == 1
    with connect(redis) as connection:
        _, again = deliver_one(connection, queue, body=None, timeout=OPTIONS["visibility_timeout"] + 5)
        assert again.payload == "job"
        again.ack()


def test_ack_after_a_short_freeze_reaches_redis(redis):
    """Redis back within ack_retry_seconds: the retry lands, nothing is left for redelivery."""
    queue = Queue("jobs-short")
    with connect(redis) as connection:
        channel, message = deliver_one(connection, queue)
        os.kill(redis.process.pid, signal.SIGSTOP)
        thaw = threading.Timer(0.35, os.kill, (redis.process.pid, signal.SIGCONT))
        thaw.start()
        message.ack()
        thaw.join()
        assert channel.qos.can_consume()
    client = redis.client()
    assert client.hlen("unacked") == 0 and client.zcard("unacked_index") == 0


def test_kombu_stock_transport_wedges(redis):
    """Why the module exists: kombu 5.7's own QoS keeps the slot after a failed ack.

    If an upgrade makes this fail, kombu fixed it and tasks/redis_transport.py may go.
    """
    queue = Queue("jobs-stock")
    with connect(redis, transport=kombu_redis.Transport) as connection:
        channel, message = deliver_one(connection, queue)
        redis.kill()
        with pytest.raises(connection.connection_errors):
            message.ack()
        assert not channel.qos.can_consume()


def test_redis_scheme_resolves_to_our_transport():
    # In a fresh interpreter, as a worker starts: kombu caches the transport a scheme
    # resolves to, so a test process that used stock kombu earlier would prove nothing.
    probe = ("from inferq.tasks.app import app\n"
             "from inferq.tasks import redis_transport\n"
             "with app.connection_for_read() as connection:\n"
             "    print(connection.transport_cls, isinstance(connection.transport, redis_transport.Transport))\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "REDIS_URL": "redis://127.0.0.1:1/0"}, cwd="/")
    assert done.returncode == 0, done.stderr
    # Flower and as_uri() still see redis://, and the worker gets our transport.
    assert done.stdout.split() == ["redis", "True"]


def test_a_message_taken_just_before_redis_dies_is_recorded_once_it_is_back(redis):
    """BRPOP took the message, then Redis was killed before the receipt (the unacked entry) was written:
    the receipt is retried while Redis restarts from its AOF, so the message is not lost."""
    queue = Queue("jobs-receipt")
    with connect(redis) as connection:
        channel, message = deliver_one(connection, queue)
        client = redis.client()
        tag = message.delivery_tag
        # As if the receipt had not been written yet: the message is only in this process now.
        client.hdel("unacked", tag)
        client.zrem("unacked_index", tag)
        channel.qos._delivered.pop(tag, None)
        redis.kill()
        back = threading.Timer(0.1, redis.start)
        back.start()
        channel.qos.append(message, tag)  # what kombu does right after BRPOP
        back.join()
        assert redis.client().hexists("unacked", tag), "the message is neither queued nor unacknowledged: lost"
        message.ack()
    assert redis.client().hlen("unacked") == 0
