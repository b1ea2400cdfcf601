"""Each inferq service's command line, written once.

The local stack (stack/supervisor_config.py), the tests and benchmarks
(stack/processes.py), the orchestrator's services (deploy/orchestrator.py) and
the workers on every runtime (deploy/nodes.py; the worker image's CMD is
checked against it) start these. ``bin_dir`` is the directory of the
environment's console scripts; empty, they are found on PATH.
"""
from __future__ import annotations

import os


def _script(bin_dir: str, name: str) -> str:
    return os.path.join(bin_dir, name) if bin_dir else name


def api(bin_dir: str = "", bind: str = "") -> list[str]:
    """The API under gunicorn, listening on bind (else INFERQ_API_BIND, through gunicorn's config module)."""
    return [_script(bin_dir, "gunicorn"), "-c", "python:inferq.api.gunicorn_conf",
            *(["--bind", bind] if bind else []), "inferq.api:create_app()"]


def worker(node: str, bin_dir: str = "") -> list[str]:
    """One worker process (solo pool, concurrency 1) whose Celery node name is node (%h: its hostname)."""
    return [_script(bin_dir, "inferq-worker"), f"--hostname={node}"]


def flower(bin_dir: str = "", address: str = "", port: int | None = None) -> list[str]:
    """Flower on the Celery app; address and port, else FLOWER_ADDRESS and FLOWER_PORT from its environment."""
    return [_script(bin_dir, "celery"), "-A", "inferq.celery_app", "flower",
            *([f"--port={port}"] if port else []), *([f"--address={address}"] if address else [])]


def local_worker_node(index: int | str, host: str = "%h") -> str:
    """The local stack's name for its index-th worker (w1@host, w2@host ...); %h lets Celery fill in the host.

    index is the worker's number, or a placeholder a supervisor replaces with it (stack/supervisor_config.py).
    """
    return f"w{index}@{host}"
