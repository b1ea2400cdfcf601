"""``inferq-worker``: the one worker command, for the local stack, the tests and the container.

One solo process per worker (concurrency 1): the model is loaded in the
process that runs it and torch gets the configured threads, nothing more.
Extra arguments (say ``--hostname w1@%h``) are passed on to ``celery worker``.
"""
from __future__ import annotations

import sys

from inferq import settings

WORKER_ARGS = [
    "-A", "inferq.tasks.app", "worker",
    "--pool=solo", "--concurrency=1",
    # Gossip and mingle cost start-up time and broker traffic and give a
    # queue of identical workers nothing.
    "--without-gossip", "--without-mingle",
    # Task events feed Flower.
    "--task-events",
    "--loglevel=INFO",
]


def queue_args(lanes: dict[str, str]) -> list[str]:
    """Consume both lanes, interactive first (celeryconfig keeps kombu from rotating that order)."""
    return ["-Q", ",".join(lanes.values())]


def main(argv: list[str] | None = None) -> int:
    """Check the worker's settings, then start one Celery worker process with inferq's flags."""
    settings.require(settings.Worker)
    from celery.__main__ import main as celery_main

    from inferq.contract import lane_queues

    extra = sys.argv[1:] if argv is None else argv
    sys.argv = ["celery", *WORKER_ARGS, *queue_args(lane_queues(settings.current(settings.Worker).redis.queue)), *extra]
    return celery_main()


if __name__ == "__main__":
    sys.exit(main())
