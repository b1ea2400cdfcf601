"""gunicorn settings for the API (``gunicorn -c python:inferq.api.gunicorn_conf 'inferq.api:create_app()'``).

Threaded workers, because ``GET /jobs/<id>?wait=N`` holds a request open while
it waits: a sync worker would be blocked for the whole wait.
"""
from inferq import settings

# gunicorn reads this file first: a setting the API cannot run with stops it here, in one line.
settings.require(settings.Api)
_api = settings.current(settings.Api)

bind = _api.address.bind
worker_class = "gthread"
workers = _api.workers
threads = _api.threads
timeout = 60
graceful_timeout = 10
accesslog = "-"
# gunicorn refuses longer request lines (414) and header fields (400) itself,
# with an HTML page, before the API sees them: the only answers that are not
# JSON. Kept at gunicorn's defaults, stated here because /openapi.json says so.
limit_request_line = 4094
limit_request_field_size = 8190
