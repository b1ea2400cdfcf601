"""A simulation of the worker group's target-tracking policy against a day of traffic, beside a fixed ten workers.

A pure-Python model, second by second, of what AWS and the hosts do (docs/capacity.md,
"Scaling on the backlog", says where each figure comes from):

- **Arrivals.** Interactive texts (one per job) at a rate that follows the day (``Scenario.interactive``),
  and a burst of bulk texts (``burst_texts``, in jobs of 256) submitted over ``burst_seconds``.
- **Workers.** Each online worker serves the interactive lane first and the bulk lane with what is left of
  its second (as the take does: broker/transport.py), at the measured speeds per worker
  (``interactive_tps``, ``bulk_tps``: bench/RESULTS.md). Each lane is first in, first out, so a text's wait is
  the time from its arrival to the second it is served.
- **The metric.** Every ``metric_period`` seconds the publisher (deploy/backlog.py) puts BacklogPerWorker:
  queued texts of both lanes / online workers (all of them with none online).
- **Target tracking**, as AWS documents it for EC2 Auto Scaling: the policy's high alarm fires after
  ``high_datapoints`` (3) consecutive one-minute datapoints above the target, its low alarm after
  ``low_datapoints`` (15) consecutive ones below 90 % of it; while an alarm is in ALARM the policy is
  invoked every minute. The new capacity is proportional: ceil(in-service hosts x metric / target). Scale-out
  raises the desired capacity whenever that exceeds it (hosts still warming up count as capacity already
  coming, so they are not launched twice); scale-in only lowers it when no host is warming up (the
  default instance warm-up, ``warmup``), never below the minimum. Target tracking has no cooldown of its
  own (the warm-up plays that part); the slow scale-in comes from the 15 minutes of the low alarm.
- **Hosts.** A launched host is billed from launch (per second, 60 s at least) and takes jobs after
  ``boot_seconds`` (instance start, the boot script fetching and loading the image, the containers' first
  heartbeat). A host chosen to leave goes through the termination lifecycle hook: it stops taking work at
  once, gives back what it holds (SIGTERM: the job goes back to the head of its queue), and is billed for
  ``drain_seconds`` more before it terminates.

The fixed cluster is the reference deployment: five hosts, ten workers, all day.
``python -m inferq.deploy.autoscale_sim --plot docs/autoscale.png`` writes the figure docs/capacity.md shows.
"""
from __future__ import annotations

import argparse
import json
import math
from collections import deque
from dataclasses import dataclass, field, replace

from inferq.deploy.backlog import TEXTS_PER_SECOND_PER_WORKER, target_backlog

DAY = 24 * 3600

PRICE_PER_HOST_HOUR = 0.085
"""c6i.large on demand, us-east-1 Linux, as docs/deploy.md's cost section quotes it."""

BULK_TPS = 187.6
"""Texts per second of one worker on bulk jobs of 16 texts: 375.1 for two workers (bench/RESULTS.md)."""

BULK_JOB_TEXTS = 256
"""Texts per bulk job (INFERQ_MAX_TEXTS's default): the burst arrives as jobs this size."""


@dataclass(frozen=True)
class Scenario:
    """The day, the speeds, the policy and the hosts. Times are seconds from midnight."""

    hours: float = 24.0
    night_tps: float = 8.0  # interactive texts per second at night ...
    day_tps: float = 300.0  # ... and at the day's plateau (a cosine ramp between 06:00-09:00 and 19:00-23:00)
    burst_texts: int = 50_000
    burst_at: float = 14 * 3600.0
    burst_seconds: float = 10.0  # inferq submit-file queues 196 jobs of 256 texts in seconds
    interactive_tps: float = TEXTS_PER_SECOND_PER_WORKER
    bulk_tps: float = BULK_TPS
    containers_per_host: int = 2
    # The policy
    target_wait_seconds: float = 60.0
    min_hosts: int = 1
    max_hosts: int = 20
    start_hosts: int = 5
    metric_period: float = 60.0
    high_datapoints: int = 3
    low_datapoints: int = 15
    low_fraction: float = 0.9
    cpu_target: float = 70.0  # a second target-tracking policy on the group's average CPU (0: none)
    warmup: float = 300.0
    boot_seconds: float = 150.0
    drain_seconds: float = 15.0
    # The fixed cluster
    fixed_hosts: int = 5
    price: float = PRICE_PER_HOST_HOUR

    @property
    def target(self) -> float:
        """Target BacklogPerWorker: the capacity model's speed x the wait the operator accepts."""
        return target_backlog(self.target_wait_seconds, self.interactive_tps)

    def interactive_rate(self, t: float) -> float:
        """Interactive texts per second at t: night, a morning ramp, the day's plateau, an evening ramp."""
        h = (t % DAY) / 3600.0

        def ramp(x: float) -> float:
            return 0.5 - 0.5 * math.cos(math.pi * min(max(x, 0.0), 1.0))

        share = ramp((h - 6) / 3) if h < 12 else 1 - ramp((h - 19) / 4)
        return self.night_tps + (self.day_tps - self.night_tps) * share


@dataclass
class Host:
    launched: float
    online: float  # takes jobs from here
    leaving: float = math.inf  # the lifecycle hook holds it from here (no more work) ...
    gone: float = math.inf  # ... until it terminates

    def takes_work(self, t: float) -> bool:
        return self.online <= t < self.leaving

    def billed(self, until: float) -> float:
        """Seconds billed from midnight up to `until` (per second, 60 at least for a host launched that day)."""
        begin, end = max(self.launched, 0.0), min(self.gone, until)
        if end <= begin:
            return 0.0
        return max(60.0, end - begin) if self.launched >= 0 else end - begin


@dataclass
class Lane:
    """One lane's queue: cohorts [arrival second, texts], first in, first out."""

    cohorts: deque = field(default_factory=deque)
    waits: dict[int, float] = field(default_factory=dict)  # whole seconds waited -> texts
    arrived: float = 0.0
    served: float = 0.0

    def add(self, t: float, texts: float) -> None:
        if texts > 0:
            self.cohorts.append([t, texts])
            self.arrived += texts

    @property
    def queued(self) -> float:
        return self.arrived - self.served

    def oldest_age(self, t: float) -> float:
        return t - self.cohorts[0][0] if self.cohorts else 0.0

    def serve(self, t: float, texts: float) -> float:
        """Serve up to `texts` from the head; return how many were served."""
        done = 0.0
        while self.cohorts and done < texts - 1e-9:
            cohort = self.cohorts[0]
            take = min(cohort[1], texts - done)
            cohort[1] -= take
            done += take
            wait = int(t - cohort[0])
            self.waits[wait] = self.waits.get(wait, 0.0) + take
            if cohort[1] <= 1e-9:
                self.cohorts.popleft()
        self.served += done
        return done

    def percentile(self, q: float) -> float:
        total, seen = sum(self.waits.values()), 0.0
        for wait in sorted(self.waits):
            seen += self.waits[wait]
            if seen >= q * total:
                return float(wait)
        return 0.0


@dataclass
class Run:
    """What one policy did over the day, sampled every `every` seconds for the plot."""

    name: str
    times: list[float] = field(default_factory=list)
    hosts: list[int] = field(default_factory=list)  # billed hosts (launched, not yet terminated)
    online_workers: list[int] = field(default_factory=list)
    wait: list[float] = field(default_factory=list)  # the oldest queued text's age, either lane
    cost: list[float] = field(default_factory=list)  # dollars so far
    summary: dict = field(default_factory=dict)


def simulate(scenario: Scenario, autoscale: bool, every: float = 60.0) -> Run:
    """Run the day under the target-tracking policy (autoscale) or with the fixed hosts; one second a step."""
    s = scenario
    end = s.hours * 3600.0
    start = s.start_hosts if autoscale else s.fixed_hosts
    hosts = [Host(-3600.0, -3600.0 + s.boot_seconds) for _ in range(start)]  # up since before midnight
    desired = start
    interactive, bulk = Lane(), Lane()
    backlog_points: list[float] = []
    cpu_points: list[float] = []
    busy = capacity = 0.0
    run = Run("autoscale" if autoscale else f"fixed {s.fixed_hosts * s.containers_per_host} workers")
    burst_rate = s.burst_texts / s.burst_seconds
    burst_end = s.burst_at + s.burst_seconds
    drained_at, lost, peak_hosts, actions = None, 0.0, start, []
    t = 0.0
    while t < end:
        interactive.add(t, s.interactive_rate(t))
        if s.burst_at <= t < burst_end:
            bulk.add(t, min(burst_rate, s.burst_texts - (t - s.burst_at) * burst_rate))
        workers = s.containers_per_host * sum(h.takes_work(t) for h in hosts)
        # One second of every online worker: interactive texts first, then bulk with what is left.
        seconds = float(workers)
        seconds -= interactive.serve(t, seconds * s.interactive_tps) / s.interactive_tps
        seconds -= bulk.serve(t, max(seconds, 0.0) * s.bulk_tps) / s.bulk_tps
        busy += workers - seconds
        capacity += workers
        if t >= burst_end and drained_at is None and bulk.queued <= 1e-6:
            drained_at = t
        if autoscale and t % s.metric_period == 0:
            metric = (interactive.queued + bulk.queued) / max(workers, 1)
            backlog_points.append(metric)
            # The hosts' CPU: a busy worker keeps its one vCPU busy (two workers, two vCPUs a host).
            cpu_points.append(100.0 * busy / capacity if capacity else 100.0)
            busy = capacity = 0.0
            warming = any(h.launched <= t < h.launched + s.warmup and h.leaving == math.inf for h in hosts)
            in_service = max(workers, 1) / s.containers_per_host
            policies = [(backlog_points, s.target)] + ([(cpu_points, s.cpu_target)] if s.cpu_target else [])
            wants, highs, lows = [], [], []
            for points, target in policies:
                wants.append(math.ceil(in_service * points[-1] / target - 1e-9))
                highs.append(len(points) >= s.high_datapoints and all(
                    d > target for d in points[-s.high_datapoints:]))
                lows.append(len(points) >= s.low_datapoints and all(
                    d < s.low_fraction * target for d in points[-s.low_datapoints:]))
            # Several target-tracking policies: out when any says out, in only when all say in, to the most
            # capacity any of them wants (AWS's rule for a group with more than one).
            out = max((want for want, high in zip(wants, highs) if high), default=0)
            if out > desired and desired < s.max_hosts:
                new = min(s.max_hosts, out)
                hosts += [Host(t, t + s.boot_seconds) for _ in range(new - desired)]
                actions.append((t, desired, new))
                desired = new
            elif all(lows) and not warming and desired > s.min_hosts:
                new = max(s.min_hosts, *wants)
                if new < desired:
                    # The newest hosts leave: the lifecycle hook holds each while it gives its jobs back.
                    for host in sorted((h for h in hosts if h.leaving == math.inf), key=lambda h: -h.launched)[
                            :desired - new]:
                        host.leaving, host.gone = t, t + s.drain_seconds
                    actions.append((t, desired, new))
                    desired = new
            hosts = [h for h in hosts if h.gone > t - DAY]  # keep the gone ones for billing
        if t % every == 0:
            alive = sum(h.launched <= t < h.gone for h in hosts)
            peak_hosts = max(peak_hosts, alive)
            run.times.append(t)
            run.hosts.append(alive)
            run.online_workers.append(workers)
            run.wait.append(max(interactive.oldest_age(t), bulk.oldest_age(t)))
            run.cost.append(sum(h.billed(t) for h in hosts) / 3600.0 * s.price)
        t += 1.0
    # Run the queue dry after the day (the hosts of the last second), so that every text is accounted for.
    while interactive.queued + bulk.queued > 1e-6 and t < end + 6 * 3600:
        seconds = float(s.containers_per_host * sum(h.takes_work(t) for h in hosts)) or 1.0
        seconds -= interactive.serve(t, seconds * s.interactive_tps) / s.interactive_tps
        bulk.serve(t, max(seconds, 0.0) * s.bulk_tps)
        t += 1.0
    arrived = interactive.arrived + bulk.arrived
    served = interactive.served + bulk.served
    lost = arrived - served - interactive.queued - bulk.queued
    night = [c for c, when in zip(run.cost, run.times) if when <= 6 * 3600]
    in_burst = [n for n, when in zip(run.hosts, run.times) if s.burst_at <= when <= s.burst_at + 3600]
    run.summary = {
        "policy": run.name,
        "cost_usd": round(sum(h.billed(end) for h in hosts) / 3600.0 * s.price, 3),
        "night_cost_usd": round(night[-1] if night else 0.0, 3),  # 00:00-06:00
        "host_hours": round(sum(h.billed(end) for h in hosts) / 3600.0, 2),
        "burst_drain_s": None if drained_at is None else round(drained_at - s.burst_at),
        "peak_hosts_in_burst": max(in_burst) if in_burst else 0,
        "peak_hosts": peak_hosts,
        "interactive_wait_p50_s": interactive.percentile(0.5),
        "interactive_wait_p99_s": interactive.percentile(0.99),
        "interactive_wait_max_s": max(interactive.waits, default=0),
        "bulk_wait_max_s": max(bulk.waits, default=0),
        "texts_arrived": round(arrived),
        "texts_served": round(served),
        "texts_lost": round(lost, 6),
        "scaling_actions": len(actions),
        "target_backlog_per_worker": s.target,
    }
    return run


def compare(scenario: Scenario) -> tuple[Run, Run]:
    """The target-tracking group and the fixed ten workers on the same day."""
    return simulate(scenario, autoscale=True), simulate(scenario, autoscale=False)


def crossover(scenario: Scenario, sizes: tuple[int, ...] = (50_000, 200_000, 500_000, 1_000_000, 2_000_000,
                                                              5_000_000)) -> int | None:
    """The smallest burst of those tried that the group drains sooner than the fixed ten workers."""
    for size in sizes:
        auto, fixed = compare(replace(scenario, burst_texts=size))
        if auto.summary["burst_drain_s"] < fixed.summary["burst_drain_s"]:
            return size
    return None


def plot(runs: tuple[Run, Run], scenario: Scenario, path: str, big: tuple[Run, Run] | None = None,
         big_texts: int = 0) -> None:
    """Hosts, queue wait and cost: over the day, around its burst, and around a bigger burst (big) if given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    window = (scenario.burst_at - 1200, scenario.burst_at + 2400)
    columns = [(runs, (0.0, scenario.hours * 3600), "the day"),
               (runs, window, f"its burst of {scenario.burst_texts:,} bulk texts")]
    if big:
        columns.append((big, window, f"the same day, a burst of {big_texts:,}"))
    figure, axes = plt.subplots(3, len(columns), figsize=(5.2 * len(columns), 8.5), sharex="col")
    for col, (pair, (low, high), title) in enumerate(columns):
        for run, style in zip(pair, ("-", "--")):
            keep = [i for i, t in enumerate(run.times) if low <= t <= high]
            hours = [run.times[i] / 3600 for i in keep]
            axes[0][col].step(hours, [run.hosts[i] for i in keep], style, where="post", label=run.name)
            axes[1][col].plot(hours, [run.wait[i] for i in keep], style, label=run.name)
            axes[2][col].plot(hours, [run.cost[i] for i in keep], style, label=run.name)
        axes[0][col].set_title(title, fontsize=10)
        axes[2][col].set_xlabel("hour of the day")
        for row in axes:
            row[col].grid(alpha=0.3)
    axes[0][0].set_ylabel("worker hosts (billed)")
    axes[1][0].set_ylabel("oldest queued text (s)")
    axes[2][0].set_ylabel("cost so far ($)")
    axes[0][0].legend(loc="upper left")
    figure.suptitle(f"Target tracking on BacklogPerWorker (target {scenario.target:,.0f} texts = "
                    f"{scenario.interactive_tps} texts/s x {scenario.target_wait_seconds:g} s) and CPU "
                    f"{scenario.cpu_target:g} %, {scenario.min_hosts}-{scenario.max_hosts} hosts, vs fixed "
                    f"{scenario.fixed_hosts * scenario.containers_per_host} workers", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m inferq.deploy.autoscale_sim", description=__doc__.split("\n")[0])
    p.add_argument("--plot", help="write the figure (PNG) here")
    p.add_argument("--target-wait-seconds", type=float, default=Scenario.target_wait_seconds)
    p.add_argument("--burst-texts", type=int, default=Scenario.burst_texts)
    p.add_argument("--min-workers", type=int, default=Scenario.min_hosts, help="hosts, as inferq-provision's")
    p.add_argument("--max-workers", type=int, default=Scenario.max_hosts, help="hosts, as inferq-provision's")
    p.add_argument("--boot-seconds", type=float, default=Scenario.boot_seconds)
    p.add_argument("--crossover", action="store_true", help="also find the burst size the group drains sooner")
    args = p.parse_args(argv)
    scenario = Scenario(target_wait_seconds=args.target_wait_seconds, burst_texts=args.burst_texts,
                        min_hosts=args.min_workers, max_hosts=args.max_workers, boot_seconds=args.boot_seconds)
    runs = compare(scenario)
    for run in runs:
        print(json.dumps(run.summary))
    if args.crossover:
        print(json.dumps({"burst_drained_sooner_from_texts": crossover(scenario)}))
    if args.plot:
        big_texts = 10 * scenario.burst_texts
        plot(runs, scenario, args.plot, compare(replace(scenario, burst_texts=big_texts)), big_texts)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
