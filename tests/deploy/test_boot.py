"""deploy/boot.py refuses an image object whose bytes do not hash to its name, before loading anything.

A host joining by itself with the whole image, under podman and podman-compose on a network-namespace host,
and taking jobs from the lab's orchestrator: tests/deploy/test_lab_autoscale.py."""
from __future__ import annotations

import pytest
import requests

from inferq.deploy import boot, image_store

HOST = "joiner"


def test_a_swapped_image_object_is_refused_before_loading(moto_endpoint, tmp_path):
    import boto3

    requests.post(moto_endpoint + "/moto-api/reset", timeout=5).raise_for_status()
    s3, ssm = (boto3.client(service, region_name="us-east-1", endpoint_url=moto_endpoint,
                            aws_access_key_id="testing", aws_secret_access_key="testing") for service in ("s3", "ssm"))
    bucket = "inferq-c22-123456789012-us-east-1"
    image_store.ensure_bucket(s3, bucket, "us-east-1", "c22")
    s3.delete_bucket_policy(Bucket=bucket)
    saved = tmp_path / "saved.tar.zst"
    saved.write_bytes(b"an image" * 1000)
    image = image_store.put_image(s3, bucket, saved, "sha256:0", "inferq-worker:x")
    image_store.put_parameters(ssm, "c22", {"REDIS_URL": "redis://10.0.0.5:6379/0"}, image)
    s3.put_object(Bucket=bucket, Key=image["key"], Body=b"something else")
    calls: list[str] = []
    with pytest.raises(boot.BootError, match="refused, not loaded"):
        boot.join(s3, ssm, "c22", bucket, tmp_path / "project", HOST, ["false"], ["false"], calls.append)
    assert calls == [] and not (tmp_path / "project" / "worker.env").exists()
