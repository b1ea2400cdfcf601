"""inferq's HTTP API: a Flask application factory.

Run it under a WSGI server: ``gunicorn -c python:inferq.api.gunicorn_conf 'inferq.api:create_app()'``.
The API pushes each job's message onto its queue itself (api/publisher.py, in the
format contract.py defines); it imports neither Celery nor the workers' code and
never loads the model.
"""
from __future__ import annotations

from flask import Flask

from inferq.settings import Api, current


def create_app(settings: Api | None = None) -> Flask:
    """Create the API: this process's settings unless a test gives its own (load(Api, {...})), then routes."""
    from inferq.api import config, errors, health, jobs, openapi, schemas
    from inferq.api.metrics import bp as metrics_bp
    from inferq.api.store import JobStore

    settings = settings or current(Api)
    app = Flask(__name__)
    config.attach(app, settings)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["inferq.store"] = JobStore(settings.redis)
    # POST /jobs's body depends on the limits this app runs with: made here, validated in the view, documented.
    app.extensions["inferq.job_request"] = schemas.job_request(settings.max_texts, bool(settings.webhooks.secret))
    errors.register(app)
    app.register_blueprint(jobs.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(metrics_bp)
    openapi.register(app)
    return app
