"""The workers' view of the one Celery app: ``celery -A inferq.tasks.app worker``.

Importing this module registers the task and the worker's signal handlers on
the app of celery_app.py, and reads the worker's settings.
"""
from inferq import redislink
from inferq.celery_app import app
from inferq.settings import RedisLink, current

# The workers' kombu transport (broker/transport.py): each take one atomic step, acks that cannot wedge
# a worker. Only the workers use it (Flower and other Celery clients keep kombu's own); broker URLs stay
# redis:// (sentinel:// with Sentinel: its Sentinel variant), and Celery passes this to kombu in place of
# the URL's scheme.
app.conf.broker_transport = "inferq.broker.transport:" + ("SentinelTransport" if current(RedisLink).sentinels
                                                          else "Transport")
# One URL, never a ';' list: kombu would switch to the next URL after a failed connect and take kombu's transport
# from its scheme (redislink.worker_broker_url).
app.conf.broker_url = redislink.worker_broker_url(current(RedisLink))

from inferq.tasks import jobs, recovery, shutdown, worker  # noqa: E402,F401  (task; orphans; model, heartbeat; SIGTERM)

__all__ = ["app"]
