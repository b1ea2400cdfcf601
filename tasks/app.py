"""The workers' view of the one Celery app: ``celery -A inferq.tasks.app worker``.

Importing this module registers the task and the worker's signal handlers on
the app of celery_app.py, and reads the worker's settings.
"""
from inferq.tasks import redis_transport

# Before any connection exists: redis:// means our transport, whose acks cannot wedge a worker.
redis_transport.register()

from inferq.celery_app import app  # noqa: E402
from inferq.tasks import jobs, recovery, shutdown, worker  # noqa: E402,F401  (task; orphans; model, heartbeat; SIGTERM)

__all__ = ["app"]
