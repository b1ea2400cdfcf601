"""The one Celery app, configured from celeryconfig."""
from celery import Celery

from inferq.tasks import redis_transport

# Before any connection exists: redis:// means our transport, whose acks cannot wedge a worker.
redis_transport.register()

app = Celery("inferq", include=["inferq.tasks.jobs", "inferq.tasks.worker", "inferq.tasks.metrics", "inferq.tasks.shutdown"])
app.config_from_object("celeryconfig")
