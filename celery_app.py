"""The one Celery app: the API sends jobs through it by task name, the workers (``tasks``) run them.

It is configured from celeryconfig by name, so Celery reads the settings when it
first needs them, not when this module is imported.
"""
from celery import Celery

app = Celery("inferq")
app.config_from_object("inferq.celeryconfig")
