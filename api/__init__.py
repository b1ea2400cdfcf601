"""inferq's HTTP API: a Flask application factory.

Run it under a WSGI server: ``gunicorn -c python:inferq.api.gunicorn_conf 'inferq.api:create_app()'``.
The API imports the Celery app to enqueue; it never loads the model.
"""
from __future__ import annotations

from flask import Flask


def create_app(test_config: dict | None = None) -> Flask:
    """Create the API: defaults from celeryconfig, then test overrides, then routes."""
    from inferq.celeryconfig import SETTINGS
    from inferq.api import errors, health, jobs, openapi
    from inferq.api.store import JobStore
    from inferq.api.metrics import bp as metrics_bp
    from inferq.tasks import app as celery_app

    app = Flask(__name__)
    app.config.from_mapping(
        MAX_CONTENT_LENGTH=SETTINGS.max_body_bytes,
        INFERQ_MAX_TEXTS=SETTINGS.max_texts,
        INFERQ_MAX_WAIT_SECONDS=SETTINGS.max_wait_seconds,
        INFERQ_HEARTBEAT_SECONDS=SETTINGS.heartbeat_seconds,
        INFERQ_QUEUE=SETTINGS.queue,
        INFERQ_MAX_QUEUE_DEPTH=SETTINGS.max_queue_depth,
        INFERQ_RETRY_AFTER=SETTINGS.retry_after_seconds,
        INFERQ_API_KEYS=SETTINGS.api_keys,
        JSON_SORT_KEYS=False,
    )
    if test_config:
        app.config.from_mapping(test_config)
    app.json.sort_keys = False
    app.extensions["inferq.store"] = JobStore(
        celery_app, SETTINGS.result_ttl_seconds, SETTINGS.redis_socket_timeout
    )
    errors.register(app)
    app.register_blueprint(jobs.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(metrics_bp)
    app.register_blueprint(openapi.bp)
    return app
