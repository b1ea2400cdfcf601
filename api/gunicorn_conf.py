"""gunicorn settings for the API (``gunicorn -c python:api.gunicorn_conf 'api:create_app()'``).

Threaded workers, because ``GET /jobs/<id>?wait=N`` holds a request open while
it waits: a sync worker would be blocked for the whole wait.
"""
from celeryconfig import SETTINGS

bind = SETTINGS.api_bind
worker_class = "gthread"
workers = SETTINGS.api_workers
threads = SETTINGS.api_threads
timeout = 60
graceful_timeout = 10
accesslog = "-"
