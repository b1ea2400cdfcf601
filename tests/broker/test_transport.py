"""The workers' transport on a real Redis with real kombu consumers (prefetch 1, as the workers run):
every take is one atomic step, an idle consumer is woken at once, and an acknowledgement that cannot reach
Redis never leaves the consumer unable to fetch."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from kombu import Connection, Queue
from kombu.transport import redis as kombu_redis

from inferq import contract
from inferq.broker import transport, wake, wire
from inferq.broker.holdings import holdings
from inferq.stack.redis_server import RedisServer
from tests.reliability.proxy import PartitionProxy

# As celeryconfig.py sets them: every poll scans for messages past the visibility timeout, and the scan's
# lock expires after half the timeout, so a lock restored from the AOF cannot hold the message for 300 s.
OPTIONS = {"socket_timeout": 0.3, "socket_connect_timeout": 0.3, "ack_retry_seconds": 0.5,
           "visibility_timeout": 2, "unacked_restore_interval": 1, "unacked_restore_throttle": 1,
           "unacked_mutex_expire": 1, "priority_steps": [0]}


@pytest.fixture(autouse=True)
def fresh_holdings():
    """Each test starts as a new worker process would: holding nothing, in step with Redis."""
    holdings.discard(holdings.tags())
    holdings.out_of_step = False


@pytest.fixture
def redis(tmp_path):
    # appendfsync always: what a take wrote survives the test's kill -9.
    server = RedisServer(tmp_path / "redis", appendfsync="always").start()
    yield server
    if server.process and server.process.poll() is None:
        os.kill(server.process.pid, signal.SIGCONT)
    server.stop()


def connect(server: RedisServer, transport_cls=transport.Transport, **options) -> Connection:
    return Connection(server.url, transport=transport_cls, transport_options={**OPTIONS, **options})


def consume(connection: Connection, queue: Queue):
    """A consumer with prefetch 1; returns (channel, list the delivered messages land in)."""
    channel = connection.channel()
    channel.basic_qos(prefetch_count=1)
    received: list = []
    connection.Consumer(queue, channel=channel, callbacks=[lambda body, m: received.append(m)]).consume()
    return channel, received


def drain_until(connection: Connection, received: list, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not received and time.monotonic() < deadline:
        try:
            connection.drain_events(timeout=0.5)
        except TimeoutError:
            pass
    assert received, f"no message was delivered within {timeout}s"


def deliver_one(connection: Connection, queue: Queue, body: str | None = "job", timeout: float = 5):
    """Publish body (unless None) and take one message with prefetch 1, unacknowledged."""
    if body is not None:
        connection.Producer(serializer="json").publish(body, routing_key=queue.name, declare=[queue])
    channel, received = consume(connection, queue)
    drain_until(connection, received, timeout)
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
    # held for redelivery and a consumer gets it again once its lease runs out.
    redis.start()
    assert redis.client().hlen(wire.UNACKED_KEY) == 1
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
    assert client.hlen(wire.UNACKED_KEY) == 0 and client.zcard(wire.UNACKED_INDEX_KEY) == 0


def test_kombu_stock_transport_wedges(redis):
    """Why the acknowledgement is ours: kombu 5.7's own QoS keeps the slot after a failed ack.

    If an upgrade makes this fail, kombu fixed it and QoS.ack/reject in broker/transport.py may go.
    """
    queue = Queue("jobs-stock")
    with connect(redis, kombu_redis.Transport) as connection:
        channel, message = deliver_one(connection, queue)
        redis.kill()
        with pytest.raises(connection.connection_errors):
            message.ack()
        assert not channel.qos.can_consume()


def test_the_worker_app_takes_with_ours_and_other_celery_clients_keep_kombus():
    # In a fresh interpreter, as a worker starts: kombu caches the transport it resolves.
    probe = textwrap.dedent("""
        import sys
        from inferq.broker import transport
        if sys.argv[1] == "worker":
            from inferq.tasks.app import app
        else:
            from inferq.celery_app import app  # what Flower loads
        with app.connection_for_read() as connection:
            print(connection.transport.driver_type, connection.hostname, connection.port,
                  isinstance(connection.transport, transport.Transport))
    """)
    env = {"PATH": "/usr/bin:/bin", "REDIS_URL": "redis://127.0.0.1:1/0"}
    out = {}
    for role in ("worker", "flower"):
        done = subprocess.run([sys.executable, "-c", probe, role], capture_output=True, text=True, timeout=60,
                              env=env, cwd="/")
        assert done.returncode == 0, done.stderr
        out[role] = done.stdout.split()
    # The same redis:// URL for both (Flower's own broker view reads it); only the worker takes with ours.
    assert out == {"worker": ["redis", "127.0.0.1", "1", "True"], "flower": ["redis", "127.0.0.1", "1", "False"]}


def test_a_take_whose_reply_is_lost_with_redis_is_recorded_when_redis_is_back(redis):
    """The window kombu's BRPOP leaves open: Redis dies after the take but before its reply is read."""
    queue = Queue("jobs-lost-reply")
    client = redis.client()
    with connect(redis) as connection:
        connection.Producer(serializer="json").publish("job", routing_key=queue.name, declare=[queue])
        channel, received = consume(connection, queue)
        # The take is sent, as the poller sends it; its reply is never read.
        connection.transport.cycle._register_BRPOP(channel)
        deadline = time.monotonic() + 5
        while client.llen(queue.name) and time.monotonic() < deadline:
            time.sleep(0.01)
        redis.kill()
        assert not received
    redis.start()
    client = redis.client()
    assert client.llen(queue.name) == 0, "the take never ran"
    assert client.hlen(wire.UNACKED_KEY) == 1, "the job is neither queued nor recorded: lost"
    # It is taken again: given back by this process before its next take, or by its lease running out.
    with connect(redis) as connection:
        _, again = deliver_one(connection, queue, body=None, timeout=OPTIONS["visibility_timeout"] + 5)
        assert again.payload == "job"
        again.ack()


def test_what_a_take_whose_reply_was_lost_took_is_given_back_before_the_next_take(redis):
    """The take runs in Redis and its reply is lost on the way (the network cut at that moment): once the
    consumer is connected again, it gives back what is recorded under its name and not in its hands before it
    takes again, at once, not after the lease (a minute here)."""
    queue = Queue("jobs-stray")
    client = redis.client()
    proxy = PartitionProxy(redis.port).start()
    try:
        url = f"redis://:{redis.password}@127.0.0.1:{proxy.port}/0"
        options = {**OPTIONS, "visibility_timeout": 60}
        with Connection(url, transport=transport.Transport, transport_options=options) as connection:
            connection.Producer(serializer="json").publish("job", routing_key=queue.name, declare=[queue])
            channel, received = consume(connection, queue)
            proxy.drop_replies()
            connection.transport.cycle._register_BRPOP(channel)  # the take goes out; its reply will not come
            deadline = time.monotonic() + 5
            while client.llen(queue.name) and time.monotonic() < deadline:
                time.sleep(0.01)
            assert client.llen(queue.name) == 0 and client.hlen(wire.UNACKED_KEY) == 1
            proxy.heal()  # the stranded connection is closed, as the peers' timeouts would
            with pytest.raises(connection.connection_errors):
                connection.drain_events(timeout=2)
            assert holdings.out_of_step
            drain_until(connection, received, 10)
            assert received[0].payload == "job" and "redelivered" not in received[0].headers  # as it was
            received[0].ack()
    finally:
        proxy.stop()
    assert not holdings.out_of_step and client.hlen(wire.UNACKED_KEY) == 0


CONSUMER_THAT_DIES = """
import os, signal, sys, time
from kombu import Connection, Queue
from inferq.broker import transport
options = {"visibility_timeout": 2, "priority_steps": [0]}
with Connection(sys.argv[1], transport=transport.Transport, transport_options=options) as connection:
    channel = connection.channel()
    channel.basic_qos(prefetch_count=1)
    def die(body, message):
        os.kill(os.getpid(), signal.SIGKILL)  # between the take and anything else the worker would do
    connection.Consumer(Queue(sys.argv[2]), channel=channel, callbacks=[die]).consume()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            connection.drain_events(timeout=1)
        except TimeoutError:
            pass
sys.exit(3)
"""


def test_a_consumer_killed_right_after_its_take_leaves_the_job_recorded(redis):
    queue = Queue("jobs-killed-consumer")
    with connect(redis) as connection:
        connection.Producer(serializer="json").publish("job", routing_key=queue.name, declare=[queue])
    done = subprocess.run([sys.executable, "-c", CONSUMER_THAT_DIES, redis.url, queue.name], timeout=60,
                          capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL, done.stderr
    client = redis.client()
    assert client.llen(queue.name) == 0 and client.hlen(wire.UNACKED_KEY) == 1
    # Its lease runs out and it is taken again, marked as a delivery of a message whose worker died.
    with connect(redis) as connection:
        _, again = deliver_one(connection, queue, body=None, timeout=OPTIONS["visibility_timeout"] + 5)
        assert again.payload == "job" and again.headers["redelivered"] is True
        again.ack()
    assert client.hlen(wire.UNACKED_KEY) == 0


def test_an_idle_consumer_is_woken_by_a_push_not_by_its_timer(redis):
    """brpop_timeout of a minute: only the wake-up can deliver within the drain's bound."""
    queue = Queue("jobs-wake")
    with connect(redis, polling_interval=60) as connection:
        connection.Producer(serializer="json").publish("warm", routing_key=queue.name, declare=[queue])
        channel, received = consume(connection, queue)
        drain_until(connection, received, 5)
        received.pop().ack()
        try:  # the channel takes, finds nothing, and blocks on the wake list
            connection.drain_events(timeout=1)
        except TimeoutError:
            pass
        assert channel._waiting
        message = json.loads(wire.classify_envelope("c" * 32, ["woken"], time.time(), queue.name))
        message["body_encoding"] = message["properties"]["body_encoding"]
        wake.push(redis.client(), queue.name, json.dumps(message))
        drain_until(connection, received, 10)
        assert received[0].headers["id"] == "c" * 32
        assert received[0].headers[contract.DELIVERY_HEADER] == 1
        received[0].ack()


def test_a_push_that_rings_nobody_is_still_taken(redis):
    """A lost wake-up (its pusher killed before it rang) costs one brpop_timeout, never the job."""
    queue = Queue("jobs-no-ring")
    with connect(redis, polling_interval=0.5) as connection:
        connection.Producer(serializer="json").publish("first", routing_key=queue.name, declare=[queue])
        _, received = consume(connection, queue)
        drain_until(connection, received, 5)
        received.pop().ack()
        redis.client().lpush(queue.name, wire.classify_envelope("d" * 32, ["unrung"], time.time(), queue.name))
        drain_until(connection, received, 10)
        assert received[0].headers["id"] == "d" * 32


def test_a_held_message_outlives_the_visibility_timeout_while_its_lease_is_renewed(redis):
    """kombu#337, celery#4400: a job that runs longer than the visibility timeout is not given to a second
    worker while the first still runs it (its worker renews the lease at every heartbeat)."""
    queue = Queue("jobs-lease")
    client = redis.client()
    with connect(redis) as first, connect(redis) as second:
        _, message = deliver_one(first, queue)
        _, received = consume(second, queue)
        deadline = time.monotonic() + 3 * OPTIONS["visibility_timeout"]
        while time.monotonic() < deadline:
            holdings.renew(client, 60)
            try:
                second.drain_events(timeout=0.3)
            except TimeoutError:
                pass
        assert not received, "a job still held was given to a second consumer"
        # The first stops renewing (its worker died): the second gets it once the lease runs out.
        holdings.discard([message.delivery_tag])
        drain_until(second, received, OPTIONS["visibility_timeout"] + 5)
        assert received[0].payload == "job" and received[0].headers["redelivered"] is True
        received[0].ack()
