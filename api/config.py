"""The API's settings on its Flask app: create_app gives the app one settings object, views read it typed."""
from __future__ import annotations

from flask import Flask, current_app

from inferq.settings import Api

EXTENSION = "inferq.settings"
"""Where the app keeps its settings object (app.extensions: Flask's place for what an extension attaches)."""


def attach(app: Flask, settings: Api) -> None:
    """Give app its settings, and Flask the one value it enforces itself, under Flask's own name."""
    app.extensions[EXTENSION] = settings
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes


def settings_of(app: Flask) -> Api:
    """The settings object app runs with."""
    return app.extensions[EXTENSION]


def current() -> Api:
    """The settings of the app handling this request."""
    return settings_of(current_app)
