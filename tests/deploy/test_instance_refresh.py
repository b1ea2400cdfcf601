"""No mixed worker group after `fab update` (issue 22): when the published image changes, the group's hosts are
replaced by an instance refresh, and `fab status` shows it while it runs.

moto 5.2.5 has no instance refresh (its server answers StartInstanceRefresh and DescribeInstanceRefreshes with a
500 page): the group, its launch template and its instances are moto's, and the refresh calls reach
tests/deploy/aws_stand_in.py, which forwards every other Auto Scaling call to moto and records these. What is
checked is what inferq asks of AWS (the call, its preferences, cancel-then-start over an older refresh) and what it
shows; AWS replacing the hosts (each through the termination hook) is verified only on AWS."""
from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer
from types import SimpleNamespace

import boto3
import pytest
import requests

from inferq.deploy import autoscaling, credentials, image_store, operations
from inferq.deploy.image import Image
from inferq.deploy.inventory import Host, Inventory
from tests.deploy import aws_stand_in
from tests.deploy.conftest import NEWEST_UBUNTU

GROUP = "c22-workers"


@pytest.fixture()
def autoscaling_endpoint(moto_endpoint, aws_env, tmp_path, monkeypatch):
    """moto, with the refresh calls answered by the stand-in in front of its Auto Scaling; (url, calls file)."""
    requests.post(moto_endpoint + "/moto-api/reset", timeout=5).raise_for_status()
    calls = tmp_path / "calls.jsonl"
    server = ThreadingHTTPServer(("127.0.0.1", 0), aws_stand_in.handler("i-0", None, calls, moto_endpoint))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    for name, value in aws_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL_AUTO_SCALING", url)
    yield url, calls
    server.shutdown()


def refresh_calls(calls) -> list[dict]:
    return [c for c in aws_stand_in.calls(calls) if c["Action"] in aws_stand_in.REFRESH]


def test_a_new_image_replaces_the_groups_hosts_and_status_shows_the_refresh(autoscaling_endpoint, tmp_path):
    _, calls = autoscaling_endpoint
    ec2 = boto3.client("ec2", region_name="us-east-1")
    ec2.create_launch_template(LaunchTemplateName=GROUP, LaunchTemplateData={"ImageId": NEWEST_UBUNTU,
                                                                             "InstanceType": "c6i.large"})
    group_api = boto3.client("autoscaling", region_name="us-east-1")
    group_api.create_auto_scaling_group(AutoScalingGroupName=GROUP, MinSize=1, MaxSize=20, DesiredCapacity=3,
                                        LaunchTemplate={"LaunchTemplateName": GROUP, "Version": "$Default"},
                                        AvailabilityZones=["us-east-1a"])
    bucket = "inferq-c22-123456789012-us-east-1"
    s3 = boto3.client("s3", region_name="us-east-1")
    image_store.ensure_bucket(s3, bucket, "us-east-1", "c22")
    s3.delete_bucket_policy(Bucket=bucket)  # TLS only; moto's endpoint is plain HTTP
    group = {"group": GROUP, "hook": "c22-drain", "bucket": bucket, "region": "us-east-1"}
    inventory = Inventory(cluster="c22", key_file="k", hosts=[
        Host("orchestrator", "orchestrator", "198.51.100.1", "10.0.0.5")], autoscaling=group)
    secrets = credentials.load_or_create(tmp_path / "secrets", "c22")
    runtime = SimpleNamespace(release=None)

    def publish(content: bytes, tag: str) -> list[str]:
        """What `fab update` does for the group once the image is built (deploy/operations.py)."""
        archive = tmp_path / f"{tag}.tar.zst"
        archive.write_bytes(content)
        lines: list[str] = []
        operations.publish_for_group(runtime, inventory, secrets, str(tmp_path / "secrets"),
                                     SimpleNamespace(ready=lambda: archive),
                                     Image(f"inferq-worker:{tag}", f"sha256:{tag * 8}"), lines.append)
        return lines

    # The first publish: hosts waiting for an image boot it; nothing to replace. The same image again: nothing.
    publish(b"image a" * 1000, "aaaaaaaa")
    publish(b"image a" * 1000, "aaaaaaaa")
    assert refresh_calls(calls) == []

    # A new image: one refresh of the whole group, most of it kept in service, no host skipped.
    said = publish(b"image b" * 1000, "bbbbbbbb")
    started = [c for c in refresh_calls(calls) if c["Action"] == "StartInstanceRefresh"]
    assert [{k: v for k, v in c.items() if k != "Version"} for c in started] == [{
        "Action": "StartInstanceRefresh", "AutoScalingGroupName": GROUP, "Strategy": "Rolling",
        "Preferences.MinHealthyPercentage": "90", "Preferences.InstanceWarmup": "300",
        "Preferences.SkipMatching": "false"}]
    assert any("instance refresh" in line and "replaces its 3 host(s)" in line for line in said), said
    shown = autoscaling.group_status(group, "c22")
    first = shown["refresh"]
    assert first and " InProgress, 0% done, 3 host(s) to go" in first, shown
    assert autoscaling.status_line(shown).endswith(f"; instance refresh: {first}")

    # Another image while that refresh runs: it is cancelled (hosts it launched may boot the older image), and a
    # new one starts.
    said = publish(b"image c" * 1000, "cccccccc")
    actions = [c["Action"] for c in refresh_calls(calls)]
    assert actions[-3:] == ["CancelInstanceRefresh", "DescribeInstanceRefreshes", "StartInstanceRefresh"], actions
    assert any(line.startswith(f"worker group {GROUP}: cancelled instance refresh {first.split()[0]}")
               for line in said), said
    second = autoscaling.group_status(group, "c22")["refresh"]
    assert second and second.split()[0] != first.split()[0]


def test_status_says_so_when_the_endpoint_has_no_instance_refresh(moto_endpoint, aws_env, monkeypatch):
    """moto 5.2.5 itself: the group line is shown all the same, the refresh part says it is unknown."""
    requests.post(moto_endpoint + "/moto-api/reset", timeout=5).raise_for_status()
    for name, value in aws_env.items():
        monkeypatch.setenv(name, value)
    assert autoscaling.refresh_text(boto3.client("autoscaling", region_name="us-east-1"), GROUP).startswith(
        f"unknown (describing the instance refreshes of {GROUP}")
