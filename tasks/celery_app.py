"""The one Celery app, configured from celeryconfig."""
from celery import Celery

app = Celery("inferq", include=["tasks.jobs", "tasks.worker", "tasks.metrics", "tasks.shutdown"])
app.config_from_object("celeryconfig")
