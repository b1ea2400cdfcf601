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

from inferq.api import config
from inferq.api.errors import ApiError
from inferq.api.health import heartbeat_bounds
from inferq.contract import (
    CANCELLED_KEY,
    FAILED_KEY,
    LATENCY_BUCKETS,
    LATENCY_KEY,
    SUBMITTED_KEY,
    SUCCEEDED_KEY,
    WORKERS_KEY,
    lane_queues,
)

bp = Blueprint("metrics", __name__)


def read(client: redis.Redis, queue: str, fresh_after: float, missing_after: float | str = "-inf") -> dict:
    """Every counter, the queue depth (each lane's and in all), the fresh and the missing workers and the latency
    histogram (cumulative), in one round trip. queue: the interactive lane's name (INFERQ_QUEUE); the bounds
    of api/health.py's heartbeat_bounds."""
    lanes = lane_queues(queue)
    pipe = client.pipeline(transaction=False)
    pipe.mget(SUBMITTED_KEY, SUCCEEDED_KEY, FAILED_KEY, CANCELLED_KEY)
    pipe.hgetall(LATENCY_KEY)
    for name in lanes.values():
        pipe.llen(name)
    pipe.zcount(WORKERS_KEY, fresh_after, "+inf")
    pipe.zcount(WORKERS_KEY, missing_after, f"({fresh_after}")
    (submitted, succeeded, failed, cancelled), latency, *depths, workers, missing = pipe.execute()
    lane_depths = {lane: int(depth) for lane, depth in zip(lanes, depths)}
    latency = {k.decode(): v.decode() for k, v in latency.items()}
    cumulative, running = [], 0
    for bound in (*map(repr, LATENCY_BUCKETS), "+Inf"):
        running += int(latency.get(bound, 0))
        cumulative.append((bound, running))
    return {
        "submitted": int(submitted or 0),
        "succeeded": int(succeeded or 0),
        "failed": int(failed or 0),
        "cancelled": int(cancelled or 0),
        "queue_depth": sum(lane_depths.values()),
        "lane_depths": lane_depths,
        "workers": int(workers),
        "workers_missing": int(missing),
        "latency_buckets": cumulative,
        "latency_sum": float(latency.get("sum", 0.0)),
        "latency_count": int(latency.get("count", 0)),
    }


class QueueCollector:
    """A prometheus_client collector whose values come from Redis."""

    def __init__(self, client: redis.Redis, queue: str, fresh_after: float, missing_after: float):
        self.client, self.queue = client, queue
        self.fresh_after, self.missing_after = fresh_after, missing_after

    def collect(self):
        """Yield the metric families of one scrape."""
        values = read(self.client, self.queue, self.fresh_after, self.missing_after)
        for name, key, help_text in (
            ("inferq_jobs_submitted", "submitted", "Jobs the API accepted (202)."),
            ("inferq_jobs_completed", "succeeded", "Jobs whose result a worker stored."),
            ("inferq_jobs_failed", "failed", "Jobs that ended failed."),
            ("inferq_jobs_cancelled", "cancelled", "Jobs cancelled (DELETE /jobs/<id> accepted)."),
        ):
            counter = CounterMetricFamily(name, help_text)
            counter.add_metric([], values[key])
            yield counter
        yield GaugeMetricFamily("inferq_queue_depth", "Jobs waiting for a worker, both lanes.",
                                value=values["queue_depth"])
        lanes = GaugeMetricFamily("inferq_lane_queue_depth", "Jobs waiting for a worker, per lane "
                                  "(interactive: one text; bulk: several, or priority low).", labels=["lane"])
        for lane, depth in values["lane_depths"].items():
            lanes.add_metric([lane], depth)
        yield lanes
        yield GaugeMetricFamily("inferq_workers_ready", "Workers with a recent heartbeat.", value=values["workers"])
        yield GaugeMetricFamily("inferq_workers_missing", "Workers that stopped beating without a clean stop "
                                "(killed, or restarting), until they beat again.", value=values["workers_missing"])
        yield HistogramMetricFamily(
            "inferq_job_latency_seconds", "Time from submission to stored result, per finished job.",
            buckets=values["latency_buckets"], sum_value=values["latency_sum"],
        )


@bp.get("/metrics")
def prometheus_metrics():
    """The queue's metrics in Prometheus' text format."""
    store = current_app.extensions["inferq.store"]
    # The same bounds as /readyz: a worker counted ready or missing here is so there.
    fresh_after, missing_after = heartbeat_bounds(time.time())
    registry = CollectorRegistry(auto_describe=False)
    registry.register(QueueCollector(store.redis, config.current().redis.queue, fresh_after, missing_after))
    try:
        body = generate_latest(registry)
    except redis.RedisError:
        raise ApiError(503, "redis_unavailable", "the job queue is unreachable; retry shortly",
                       headers={"Retry-After": "1"}) from None
    return Response(body, content_type=CONTENT_TYPE_LATEST)
