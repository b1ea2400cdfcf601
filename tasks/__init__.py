"""inferq's Celery side: the app, the inference task and model loading.

``celery -A inferq.tasks worker`` finds ``tasks.app``. Importing this package is
cheap (no torch, no transformers), so the API imports it to enqueue.
"""
from inferq.tasks.celery_app import app

__all__ = ["app"]
