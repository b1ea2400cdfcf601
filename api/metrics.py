"""``GET /metrics``: Prometheus metrics of the job queue, read from Redis at each scrape.

The counters are written to Redis by the API (submitted, api/store.py) and by
the workers (succeeded, failed, latency: tasks/metrics.py says why Redis); the
keys are in contract.py. A scrape builds a fresh registry from one Redis round
trip, so every gunicorn process answers the same numbers.
"""
from __future__ import annotations

import time

import redis
from flask import Blueprint, Response, current_app
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from inferq.api.errors import ApiError
from inferq.contract import FAILED_KEY, LATENCY_BUCKETS, LATENCY_KEY, SUBMITTED_KEY, SUCCEEDED_KEY, WORKERS_KEY

bp = Blueprint("metrics", __name__)


def read(client: redis.Redis, queue: str, fresh_after: float) -> dict:
    """Every counter, the queue depth, the fresh workers and the latency histogram (cumulative), in one round trip."""
    pipe = client.pipeline(transaction=False)
    pipe.mget(SUBMITTED_KEY, SUCCEEDED_KEY, FAILED_KEY)
    pipe.hgetall(LATENCY_KEY)
    pipe.llen(queue)
    pipe.zcount(WORKERS_KEY, fresh_after, "+inf")
    (submitted, succeeded, failed), latency, depth, workers = pipe.execute()
    latency = {k.decode(): v.decode() for k, v in latency.items()}
    cumulative, running = [], 0
    for bound in (*map(repr, LATENCY_BUCKETS), "+Inf"):
        running += int(latency.get(bound, 0))
        cumulative.append((bound, running))
    return {
        "submitted": int(submitted or 0),
        "succeeded": int(succeeded or 0),
        "failed": int(failed or 0),
        "queue_depth": int(depth),
        "workers": int(workers),
        "latency_buckets": cumulative,
        "latency_sum": float(latency.get("sum", 0.0)),
        "latency_count": int(latency.get("count", 0)),
    }


class QueueCollector:
    """A prometheus_client collector whose values come from Redis."""

    def __init__(self, client: redis.Redis, queue: str, fresh_after: float):
        self.client, self.queue, self.fresh_after = client, queue, fresh_after

    def collect(self):
        """Yield the metric families of one scrape."""
        values = read(self.client, self.queue, self.fresh_after)
        for name, key, help_text in (
            ("inferq_jobs_submitted", "submitted", "Jobs the API accepted (202)."),
            ("inferq_jobs_completed", "succeeded", "Jobs whose result a worker stored."),
            ("inferq_jobs_failed", "failed", "Jobs that ended failed."),
        ):
            counter = CounterMetricFamily(name, help_text)
            counter.add_metric([], values[key])
            yield counter
        yield GaugeMetricFamily("inferq_queue_depth", "Jobs waiting in the queue for a worker.",
                                value=values["queue_depth"])
        yield GaugeMetricFamily("inferq_workers_ready", "Workers with a recent heartbeat.", value=values["workers"])
        yield HistogramMetricFamily(
            "inferq_job_latency_seconds", "Time from submission to stored result, per finished job.",
            buckets=values["latency_buckets"], sum_value=values["latency_sum"],
        )


@bp.get("/metrics")
def prometheus_metrics():
    """The queue's metrics in Prometheus' text format."""
    store = current_app.extensions["inferq.store"]
    # A worker beats every heartbeat_seconds; three missed beats and it is gone (as /readyz).
    fresh_after = time.time() - 3 * current_app.config["INFERQ_HEARTBEAT_SECONDS"]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(QueueCollector(store.redis, current_app.config["INFERQ_QUEUE"], fresh_after))
    try:
        body = generate_latest(registry)
    except redis.RedisError:
        raise ApiError(503, "redis_unavailable", "the job queue is unreachable; retry shortly",
                       headers={"Retry-After": "1"}) from None
    return Response(body, content_type=CONTENT_TYPE_LATEST)
