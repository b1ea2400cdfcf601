"""Celery's settings (lowercase names only; see Celery's docs), mapped from inferq's settings.

``celery_app.py`` reads this module by name when Celery first needs its
configuration. inferq's own settings, their environment variables and checks
are in settings/; the key names kombu is told to use are in broker/wire.py.
It reads the two parts every process loading the Celery app has (a worker,
Flower, the deploy's checks): where Redis is and how jobs are delivered. They
are this process's parts, read once: in a worker, ``current(Worker).delivery``
is the very object read here.
"""
from kombu import Queue

from inferq import contract, redislink
from inferq.broker import wire
from inferq.settings import Delivery, RedisLink, current

_redis, _delivery = current(RedisLink), current(Delivery)

# With Sentinel, ``sentinel://`` URLs (one per Sentinel) and the primary's name in the transport options
# below: kombu's Sentinel channel, Celery's Sentinel backend and Flower's broker view find the primary so.
broker_url = redislink.celery_url(_redis, _redis.broker)
result_backend = redislink.celery_url(_redis, _redis.backend)
# rediss:// (a deployed cluster's Redis, across hosts): verify Redis's certificate against the cluster's CA.
# kombu and Flower's broker view read only these (kombu alone would connect without checking anything).
if _broker_ssl := _redis.ssl_options(_redis.broker):
    broker_use_ssl = _broker_ssl
if _backend_ssl := _redis.ssl_options(_redis.backend):
    redis_backend_use_ssl = _backend_ssl
task_default_queue = _redis.queue
# The two priority lanes, interactive first: a worker consumes them in this order
# (with "queue_order_strategy": "priority" below), so it takes a single text before
# any bulk work, and bulk work whenever no single text waits.
task_queues = [Queue(name) for name in contract.lane_queues(_redis.queue).values()]
# JSON only: a pickle message pushed into the queue must never be executed.
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
result_accept_content = ["json"]
# At-least-once: acknowledge after the result is stored, one message at a time,
# and give the message back if the worker process dies under it.
task_acks_late = True
task_reject_on_worker_lost = True
# One message at a time: no worker holds a job it is not running while another
# is idle. Micro-batching takes what waits in the queue when a job starts
# (tasks/batching.py), so it needs no prefetch.
worker_prefetch_multiplier = 1
# No STARTED state: it cost every job a read and a write of its result key and
# one more wake-up of its long-polls. The worker records who started a job in
# the same round trip as its delivery count (tasks/deliveries.py), and the API
# answers "running" from that; Flower still sees task-started events.
task_track_started = False
result_expires = _redis.result_ttl
task_time_limit = _delivery.task_time_limit
task_soft_time_limit = _delivery.soft_time_limit
broker_transport_options = {
    # kombu's Redis transport rotates the order in which it polls a worker's
    # queues after each message (round robin); "priority" keeps the order of
    # task_queues, so the interactive lane is always asked first (one BRPOP
    # over both lists, which answers from the first non-empty one).
    "queue_order_strategy": "priority",
    # The lanes are inferq's priorities: one list per queue, no kombu priority sub-queues to poll.
    "priority_steps": [0],
    # A job's lease (broker/holdings.py): renewed at every heartbeat while its worker holds it, so it
    # only bounds how long the jobs of a worker that died or froze wait before another takes them.
    "visibility_timeout": _delivery.visibility_timeout,
    "socket_timeout": _redis.timeout,
    "socket_connect_timeout": _redis.timeout,
    # A primary that vanished without closing its connections (a lost host, the --ha layout's failover) never
    # answers the wait a worker has in flight, and no socket timeout applies to the event loop's wait: kombu
    # drops a BRPOP connection whose reply is this many seconds overdue, and a pub/sub connection that missed
    # its pings (kombu's default of 25 s kept a worker away for a minute in the lab's failover test).
    "health_check_interval": max(1, round(2 * _redis.timeout)),
    # A job whose worker died is given back once the visibility timeout has
    # passed; scan for such jobs often enough that the scan adds little to it.
    "unacked_restore_interval": max(1, min(10, _delivery.visibility_timeout // 4)),
    "unacked_restore_throttle": 1,
    # The scan holds a lock in Redis for the milliseconds it takes. A lock left
    # by a worker that died holding it (or restored with Redis's AOF after a
    # crash) blocks every worker's scan until it expires: kombu's default of
    # 300 s held jobs of a killed worker for minutes after a Redis restart.
    "unacked_mutex_expire": max(1, min(60, _delivery.visibility_timeout // 2)),
    # kombu's defaults, named here so that broker/wire.py states every key.
    "unacked_key": wire.UNACKED_KEY,
    "unacked_index_key": wire.UNACKED_INDEX_KEY,
    "unacked_mutex_key": wire.UNACKED_MUTEX_KEY,
    # An acknowledgement that cannot reach Redis is retried this long, then left
    # to the visibility timeout; the worker goes on either way (broker/transport.py).
    "ack_retry_seconds": min(5.0, _delivery.visibility_timeout / 2),
    # How long a restored job's delivery count and a worker's holding set are kept (broker/scripts.py).
    "record_ttl": _redis.result_ttl,
    # A take takes the jobs waiting behind the first while their texts fit one forward pass (micro-batching).
    "batch_texts": _delivery.batch_size,
    **redislink.master_transport_options(_redis, _redis.broker),
}
result_backend_transport_options = {"visibility_timeout": _delivery.visibility_timeout,
                                    **redislink.master_transport_options(_redis, _redis.backend)}
redis_socket_timeout = _redis.timeout
redis_socket_connect_timeout = _redis.timeout
broker_connection_retry_on_startup = True
# A worker cut off from Redis keeps trying to reconnect rather than exiting
# after a fixed number of attempts: the outage may outlast them.
broker_connection_max_retries = None
# A result that cannot be stored because Redis is away is retried until Redis
# returns, never turned into a failure: the job is acknowledged only after its
# result is stored.
result_backend_always_retry = True
broker_connection_timeout = _redis.timeout
# A publish that cannot reach Redis fails fast, so the API can answer 503
# instead of holding the client.
task_publish_retry_policy = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}
worker_hijack_root_logger = False
worker_send_task_events = True
# Flower learns of a job from the worker's task-received event onwards. A
# task-sent event from the API would cost each submit another publish, for a
# state ("queued") that GET /jobs/<id> and the queue-depth metric already show.
task_send_sent_event = False
