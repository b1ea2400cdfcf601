"""The scaling signal: backlog per online worker and the oldest queued job's age, published to CloudWatch.

What the worker group scales on (docs/deploy.md, "Worker hosts that scale"): the texts
waiting in both lanes divided by the workers online, read from the same Redis keys
``/metrics`` reads (each lane's list, the workers' heartbeats: api/metrics.py), in one
MULTI round trip. A job's message says how many texts it carries (contract.TEXTS_HEADER)
and when it was queued (its ``queued_at`` keyword), so no job record is read.

Texts, not jobs: a bulk job of 256 texts is 256 texts of work; the target (target_backlog)
is a number of texts, from the capacity model. At most ``sample`` messages per lane are
read (the oldest ones, at the list's right end, where a worker takes next); past that the
lane's texts are its length times the sample's mean, so a read costs Redis a bounded
amount whatever the queue holds.

No worker online with texts waiting is a backlog per worker of all the texts (as if one
worker were there): the metric is then far above any target and the group scales out.

Run on the orchestrator as ``inferq-backlog-metrics`` (a loop, every --interval seconds, at
most 60): it reads REDIS_URL, INFERQ_QUEUE and INFERQ_HEARTBEAT_SECONDS as the API does,
and boto3's own region and credentials (the orchestrator's instance profile on AWS).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis

from inferq import contract
from inferq.broker import wire

NAMESPACE = "inferq"
"""The CloudWatch namespace of every inferq metric; the Cluster dimension says which cluster."""

CLUSTER_DIMENSION = "Cluster"

BACKLOG_PER_WORKER = "BacklogPerWorker"
"""The metric the target-tracking policy follows: queued texts (both lanes) / online workers."""

QUEUED_TEXTS, ONLINE_WORKERS, OLDEST_AGE = "QueuedTexts", "OnlineWorkers", "OldestJobAgeSeconds"

MAX_INTERVAL_SECONDS = 60.0
"""Target tracking evaluates one-minute datapoints: a publisher slower than this leaves gaps, which its alarms
treat as missing data (no scaling)."""

SAMPLE = 1000
"""Messages read per lane at most, per reading."""

MISSED_BEATS = 3
"""As api/health.py: a worker is online while its last heartbeat is within three beats (the same count /readyz and
/metrics use; repeated here so that this module needs no Flask)."""

TEXTS_PER_SECOND_PER_WORKER = 76.9
"""The capacity model's speed of one worker of the reference deployment (docs/capacity.md, "Scaling on the
backlog"): two workers sharing one core, one text per job, fed over Redis: 153.7 texts/s for the two
(bench/RESULTS.md, reference layout), as on a 2-vCPU worker host. The slowest measured per-worker figure of the
deployed layout, so a target derived from it errs toward more hosts."""

TARGET_WAIT_SECONDS = 60.0
"""The wait the operator accepts for a text queued behind the backlog, by default (--target-wait-seconds)."""


def target_backlog(wait_seconds: float, texts_per_second: float = TEXTS_PER_SECOND_PER_WORKER) -> float:
    """The target of BacklogPerWorker: the texts one worker clears in wait_seconds.

    A worker that has B texts ahead of it clears them in B / speed seconds; keeping B at
    speed x wait keeps the last queued text's wait near wait_seconds (AWS's "acceptable
    backlog per instance = acceptable latency / processing time per message").
    """
    if wait_seconds <= 0 or texts_per_second <= 0:
        raise ValueError("the wait and the speed must be positive")
    return round(texts_per_second * wait_seconds, 1)


@dataclass(frozen=True)
class Backlog:
    """One reading of the queue."""

    lane_texts: dict[str, int]
    lane_jobs: dict[str, int]
    online_workers: int
    oldest_age_s: float
    estimated: bool = False  # a lane held more than the sample: its texts are extrapolated
    at: float = field(default=0.0)

    @property
    def queued_texts(self) -> int:
        return sum(self.lane_texts.values())

    @property
    def per_worker(self) -> float:
        """Queued texts per online worker (all of them with none online)."""
        return self.queued_texts / max(self.online_workers, 1)


def _texts(raw: bytes) -> int:
    """How many texts a queued message carries: its TEXTS_HEADER (1 without), 0 for a message that is no
    classification (a callback's delivery) or that no worker could read (set aside by the take)."""
    try:
        headers = json.loads(raw)["headers"]
    except (ValueError, KeyError, TypeError):
        return 0
    if headers.get("task", contract.CLASSIFY_TASK) != contract.CLASSIFY_TASK:
        return 0
    return int(headers.get(contract.TEXTS_HEADER, 1))


def _queued_at(raw: bytes | None) -> float | None:
    if raw is None:
        return None
    try:
        _headers, _properties, _args, kwargs = wire.read_task(raw)
        return float(kwargs["queued_at"])
    except (ValueError, KeyError, TypeError):
        return None


def read(client: redis.Redis, queue: str, now: float, fresh_after: float, sample: int = SAMPLE) -> Backlog:
    """The backlog now, in one MULTI round trip: each lane's length, its oldest `sample` messages and the online
    workers (heartbeat after fresh_after). queue: the interactive lane's name (INFERQ_QUEUE)."""
    lanes = contract.lane_queues(queue)
    pipe = client.pipeline(transaction=True)
    for name in lanes.values():
        pipe.llen(name)
        pipe.lrange(name, -sample, -1)  # the oldest: LPUSH queues, the take pops the right end
    pipe.zcount(contract.WORKERS_KEY, fresh_after, "+inf")
    *replies, workers = pipe.execute()
    lane_texts, lane_jobs, oldest, estimated = {}, {}, [], False
    for i, lane in enumerate(lanes):
        depth, messages = int(replies[2 * i]), replies[2 * i + 1]
        texts = sum(_texts(raw) for raw in messages)
        if depth > len(messages) and messages:
            texts, estimated = round(texts * depth / len(messages)), True
        lane_texts[lane], lane_jobs[lane] = texts, depth
        # The right end is the oldest message (or one given back by a leaving worker, older still).
        queued_at = _queued_at(messages[-1] if messages else None)
        if queued_at is not None:
            oldest.append(queued_at)
    age = max(0.0, now - min(oldest)) if oldest else 0.0
    return Backlog(lane_texts, lane_jobs, int(workers), round(age, 3), estimated, now)


def metric_data(backlog: Backlog, cluster: str, storage_resolution: int = 60) -> list[dict[str, Any]]:
    """The reading as CloudWatch datapoints of the cluster (PutMetricData's MetricData)."""
    dimensions = [{"Name": CLUSTER_DIMENSION, "Value": cluster}]
    stamp = backlog.at or time.time()

    when = datetime.fromtimestamp(stamp, tz=UTC)
    return [
        {"MetricName": name, "Dimensions": dimensions, "Timestamp": when, "Value": float(value), "Unit": unit,
         "StorageResolution": storage_resolution}
        for name, value, unit in (
            (BACKLOG_PER_WORKER, round(backlog.per_worker, 3), "Count"),
            (QUEUED_TEXTS, backlog.queued_texts, "Count"),
            (ONLINE_WORKERS, backlog.online_workers, "Count"),
            (OLDEST_AGE, backlog.oldest_age_s, "Seconds"),
        )
    ]


def publish(cloudwatch: Any, backlog: Backlog, cluster: str, namespace: str = NAMESPACE) -> None:
    """Put one reading to CloudWatch (one PutMetricData call)."""
    cloudwatch.put_metric_data(Namespace=namespace, MetricData=metric_data(backlog, cluster))


def fresh_after(now: float, heartbeat_seconds: float) -> float:
    return now - MISSED_BEATS * heartbeat_seconds


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="inferq-backlog-metrics", description=(
        "Publish the queue's backlog per online worker and its oldest job's age to CloudWatch, every --interval "
        "seconds (the orchestrator runs it; the worker group's target-tracking policy follows BacklogPerWorker)."))
    p.add_argument("--cluster", default=os.environ.get("INFERQ_CLUSTER", "inferq"),
                   help="the Cluster dimension (default: $INFERQ_CLUSTER, else inferq)")
    p.add_argument("--namespace", default=NAMESPACE)
    p.add_argument("--region", default=None, help="default: boto3's (AWS_DEFAULT_REGION, the instance's)")
    p.add_argument("--interval", type=float, default=MAX_INTERVAL_SECONDS,
                   help=f"seconds between readings, at most {MAX_INTERVAL_SECONDS:g} (default)")
    p.add_argument("--once", action="store_true", help="publish one reading, print it, and exit")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not 0 < args.interval <= MAX_INTERVAL_SECONDS:
        print(f"inferq-backlog-metrics: --interval must be within (0, {MAX_INTERVAL_SECONDS:g}] seconds: "
              "target tracking evaluates one-minute datapoints", file=sys.stderr)
        return 2
    import boto3

    from inferq import redislink
    from inferq.settings.parser import load
    from inferq.settings.parts import RedisLink

    link = load(RedisLink)
    # link.broker, not link.url: it carries the CA check of a rediss:// URL (INFERQ_REDIS_CA_FILE), without which
    # the orchestrator's Redis, certified by the cluster's own CA, would be refused.
    client = redislink.client(link, link.broker, socket_timeout=max(link.timeout, 5.0))
    cloudwatch = boto3.client("cloudwatch", region_name=args.region)
    while True:
        started = time.time()
        try:
            backlog = read(client, link.queue, started, fresh_after(started, link.heartbeat_seconds))
            publish(cloudwatch, backlog, args.cluster, args.namespace)
            print(json.dumps({"at": round(started, 3), "backlog_per_worker": round(backlog.per_worker, 3),
                              "queued_texts": backlog.queued_texts, "lane_texts": backlog.lane_texts,
                              "online_workers": backlog.online_workers, "oldest_age_s": backlog.oldest_age_s,
                              "estimated": backlog.estimated}), flush=True)
        except Exception as exc:
            if args.once:
                print(f"inferq-backlog-metrics: {type(exc).__name__}: {exc}", file=sys.stderr)
                return 1
            print(f"inferq-backlog-metrics: reading skipped: {type(exc).__name__}: {exc}", file=sys.stderr,
                  flush=True)
        if args.once:
            return 0
        time.sleep(max(0.0, args.interval - (time.time() - started)))



if __name__ == "__main__":
    sys.exit(main())
