"""The simulation of the worker group's policies (deploy/autoscale_sim.py) against a fixed ten workers: what the
target-tracking rule does with a day of interactive traffic and a burst of bulk texts, at the measured speeds."""
from __future__ import annotations

from dataclasses import replace

from inferq.deploy import autoscale_sim
from inferq.deploy.autoscale_sim import Scenario, compare
from tests.figures import record


def hosts_at(run, hour: float) -> int:
    return run.hosts[run.times.index(hour * 3600)]


def test_the_group_follows_the_day_costs_less_and_loses_nothing(tmp_path):
    scenario = Scenario()
    auto, fixed = compare(scenario)
    big_scenario = replace(scenario, burst_texts=500_000)
    big_auto, big_fixed = compare(big_scenario)
    for run in (auto, fixed, big_auto, big_fixed):
        s = run.summary
        # No lost work: every text that arrived was served (the model gives a leaving host's work back).
        assert s["texts_arrived"] == s["texts_served"] and abs(s["texts_lost"]) < 1e-6, s
    a, f = auto.summary, fixed.summary
    # Night: the group is at its minimum (one host) and costs less than the fixed five hosts; so does the day.
    assert hosts_at(auto, 4) == scenario.min_hosts and hosts_at(auto, 12) > scenario.min_hosts
    assert a["night_cost_usd"] < f["night_cost_usd"] / 3 and a["cost_usd"] < f["cost_usd"] / 2
    # The 50,000-text burst: the day's hosts clear it before the three-minute alarm could add one, so the
    # group is slower than ten workers here (it has fewer), but its oldest bulk text waits under two minutes.
    assert a["burst_drain_s"] <= 3 * 60 and a["bulk_wait_max_s"] <= 120
    assert a["interactive_wait_max_s"] <= 1  # interactive texts go first, burst or not
    # A burst ten times larger: the group scales out to its maximum and drains it sooner than fixed-10 ...
    b, bf = big_auto.summary, big_fixed.summary
    assert b["peak_hosts_in_burst"] == scenario.max_hosts and b["burst_drain_s"] < bf["burst_drain_s"]
    # ... and scales in slowly: no host leaves for 15 minutes after the queue is empty (the low alarm's
    # 15 datapoints), then back to the day's size.
    drained = scenario.burst_at + b["burst_drain_s"]
    assert all(n == scenario.max_hosts for n, t in zip(big_auto.hosts, big_auto.times) if drained <= t <= drained + 900)
    assert hosts_at(big_auto, 16) == hosts_at(auto, 16)
    assert b["cost_usd"] < bf["cost_usd"]
    record("autoscale simulation", target_backlog=a["target_backlog_per_worker"],
           burst_texts=scenario.burst_texts, drain_s_auto=a["burst_drain_s"], drain_s_fixed10=f["burst_drain_s"],
           bulk_wait_max_s_auto=a["bulk_wait_max_s"], bulk_wait_max_s_fixed10=f["bulk_wait_max_s"],
           night_cost_auto=a["night_cost_usd"], night_cost_fixed10=f["night_cost_usd"],
           day_cost_auto=a["cost_usd"], day_cost_fixed10=f["cost_usd"], host_hours_auto=a["host_hours"],
           big_burst_texts=big_scenario.burst_texts, big_drain_s_auto=b["burst_drain_s"],
           big_drain_s_fixed10=bf["burst_drain_s"], big_peak_hosts=b["peak_hosts_in_burst"],
           lost=a["texts_lost"] + b["texts_lost"])


def test_backlog_alone_oscillates_under_a_day_above_one_host():
    """Why the group has a CPU policy besides the backlog one: with the backlog policy alone, a steady load above
    the minimum's capacity is served by a cycle (queue builds, scale out, queue empties, scale in to the minimum),
    which makes interactive texts wait minutes."""
    alone, _ = compare(Scenario(cpu_target=0))
    both, _ = compare(Scenario())
    assert alone.summary["scaling_actions"] > 10 * both.summary["scaling_actions"]
    assert alone.summary["interactive_wait_max_s"] > 60 >= both.summary["interactive_wait_max_s"]


def test_the_plot_command_writes_a_png(tmp_path, capsys):
    path = tmp_path / "autoscale.png"
    assert autoscale_sim.main(["--plot", str(path)]) == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert '"policy": "autoscale"' in capsys.readouterr().out
