"""inferq's HTTP API: a Flask application factory.

Run it under a WSGI server: ``gunicorn -c python:inferq.api.gunicorn_conf 'inferq.api:create_app()'``.
The API pushes each job's message onto its queue itself (api/publisher.py, in the
format contract.py defines); it imports neither Celery nor the workers' code and
never loads the model.
"""
from __future__ import annotations

from flask import Flask


def create_app(test_config: dict | None = None) -> Flask:
    """Create the API: defaults from the API's settings, then test overrides, then routes."""
    from inferq.api import errors, health, jobs, openapi, schemas
    from inferq.api.metrics import bp as metrics_bp
    from inferq.api.store import JobStore
    from inferq.settings import Api, current

    settings = current(Api)
    app = Flask(__name__)
    app.config.from_mapping(
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        INFERQ_MAX_TEXTS=settings.max_texts,
        INFERQ_MAX_WAIT_SECONDS=settings.max_wait_seconds,
        INFERQ_HEARTBEAT_SECONDS=settings.heartbeat_seconds,
        INFERQ_QUEUE=settings.queue,
        INFERQ_MAX_QUEUE_DEPTH=settings.max_queue_depth,
        INFERQ_RETRY_AFTER=settings.retry_after,
        INFERQ_REDIS_MEMORY_HIGH=settings.redis_memory_high,
        INFERQ_API_KEYS=settings.api_keys,
        INFERQ_REDIS_URL=settings.backend,
        INFERQ_RESULT_TTL=settings.result_ttl,
        INFERQ_REDIS_TIMEOUT=settings.redis_timeout,
        INFERQ_WEBHOOK_SECRET=settings.webhook_secret,
        INFERQ_WEBHOOK_ALLOWED_NETWORKS=settings.webhook_allowed_networks,
    )
    if test_config:
        app.config.from_mapping(test_config)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["inferq.store"] = JobStore(
        app.config["INFERQ_REDIS_URL"], app.config["INFERQ_RESULT_TTL"], app.config["INFERQ_REDIS_TIMEOUT"])
    # POST /jobs's body depends on the limits this app runs with: made here, validated in the view, documented.
    app.extensions["inferq.job_request"] = schemas.job_request(
        app.config["INFERQ_MAX_TEXTS"], bool(app.config["INFERQ_WEBHOOK_SECRET"]))
    errors.register(app)
    app.register_blueprint(jobs.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(metrics_bp)
    openapi.register(app)
    return app
