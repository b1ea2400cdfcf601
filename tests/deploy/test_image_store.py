"""The worker group's image object and parameters (deploy/image_store.py) in moto's server: a private, encrypted
bucket holding the image by digest, SecureString parameters, a host's fetch refusing bytes that do not match the
digest, the worker role's policy covering exactly these, and nothing left after delete_all."""
from __future__ import annotations

import fnmatch
import json
import os

import pytest
import requests

from inferq.deploy import autoscaling, image_store
from inferq.deploy.errors import DeployError


@pytest.fixture()
def aws(moto_endpoint, aws_env):
    import boto3

    requests.post(moto_endpoint + "/moto-api/reset", timeout=5).raise_for_status()
    make = lambda service: boto3.client(service, region_name="us-east-1", endpoint_url=moto_endpoint,  # noqa: E731
                                        aws_access_key_id="testing", aws_secret_access_key="testing")
    return make("s3"), make("ssm")


def test_the_image_and_secrets_are_stored_privately_and_fetched_only_by_digest(aws, tmp_path):
    s3, ssm = aws
    names = autoscaling.Names("c22")
    bucket = names.bucket("123456789012", "us-east-1")
    assert image_store.ensure_bucket(s3, bucket, "us-east-1", "c22") is True
    assert image_store.ensure_bucket(s3, bucket, "us-east-1", "c22") is False  # a second run makes nothing
    block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert all(block.values()) and len(block) == 4
    rule = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
    assert policy["Statement"][0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert s3.get_bucket_tagging(Bucket=bucket)["TagSet"] == [{"Key": "inferq:cluster", "Value": "c22"}]

    saved = tmp_path / "image.tar.zst"
    saved.write_bytes(os.urandom(3 * 2**20))
    # moto enforces the bucket policy: its endpoint is plain HTTP, so the TLS-only statement refuses the upload.
    with pytest.raises(DeployError, match="Forbidden"):
        image_store.put_image(s3, bucket, saved, "sha256:abc123")
    s3.delete_bucket_policy(Bucket=bucket)  # (boto3 speaks HTTPS to AWS itself; here the rest goes over HTTP)
    image = image_store.put_image(s3, bucket, saved, "sha256:abc123")
    assert image["key"] == f"images/sha256-{image_store.sha256_of(saved)}.tar.zst"
    head = s3.head_object(Bucket=bucket, Key=image["key"])
    assert head["ServerSideEncryption"] == "AES256" and head["Metadata"]["image-id"] == "sha256:abc123"
    image_store.put_parameters(ssm, "c22", {"REDIS_URL": "rediss://inferq-worker:pw@10.0.0.5:6379/0",
                                            "INFERQ_WEBHOOK_SECRET": "s3cret"}, image)
    stored = {p["Name"]: p for p in ssm.get_parameters_by_path(Path="/inferq/c22/worker/")["Parameters"]}
    assert stored["/inferq/c22/worker/REDIS_URL"]["Type"] == "SecureString"
    assert stored["/inferq/c22/worker/REDIS_URL"]["Value"] != "rediss://inferq-worker:pw@10.0.0.5:6379/0"
    assert stored["/inferq/c22/worker/image"]["Type"] == "String"

    # The worker role may read exactly these: the object under images/, the parameters under the worker path.
    statements = {s["Sid"]: s for s in autoscaling.worker_policy(names, "us-east-1", "123456789012")["Statement"]}
    assert fnmatch.fnmatch(f"arn:aws:s3:::{bucket}/{image['key']}", statements["ReadTheClusterImage"]["Resource"][0])
    for name in stored:
        assert fnmatch.fnmatch(f"arn:aws:ssm:us-east-1:123456789012:parameter{name}",
                               statements["ReadTheWorkerSecrets"]["Resource"][1])

    # What a booting host does: the decrypted secrets, the image checked against its digest.
    secrets, wanted = image_store.read_parameters(ssm, "c22")
    assert secrets == {"REDIS_URL": "rediss://inferq-worker:pw@10.0.0.5:6379/0", "INFERQ_WEBHOOK_SECRET": "s3cret"}
    fetched = image_store.fetch_image(s3, bucket, wanted, tmp_path / "fetched.tar.zst")
    assert fetched.read_bytes() == saved.read_bytes()
    # Someone swaps the object's bytes: the host refuses it and keeps nothing.
    s3.put_object(Bucket=bucket, Key=image["key"], Body=b"not the image")
    with pytest.raises(DeployError, match="refused, not loaded"):
        image_store.fetch_image(s3, bucket, wanted, tmp_path / "swapped.tar.zst")
    assert not (tmp_path / "swapped.tar.zst").exists()

    deleted = image_store.delete_all(s3, ssm, "c22", bucket)
    assert deleted == [f"bucket {bucket}", "3 parameter(s) under /inferq/c22/worker/"]
    assert bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert ssm.get_parameters_by_path(Path="/inferq/c22/worker/")["Parameters"] == []
    assert image_store.delete_all(s3, ssm, "c22", bucket) == []


def test_a_host_without_a_published_image_is_told_so(aws):
    _s3, ssm = aws
    with pytest.raises(DeployError, match="`fab deploy` has not published an image yet"):
        image_store.read_parameters(ssm, "nothing-here")



def test_fab_publishes_the_image_and_the_worker_settings_for_the_group(aws, aws_env, tmp_path, monkeypatch):
    """What `fab deploy` and `fab update` do with a group (deploy/operations.py's publish_for_group): the archive
    the fixed hosts get, into the bucket; worker.env's values, the image and the compose file into the parameters,
    read back as a booting host reads them."""
    from inferq.deploy import boot, config_files, credentials
    from inferq.deploy.image import Image
    from inferq.deploy.inventory import Host, Inventory
    from tests.deploy.conftest import ROOT

    for name, value in aws_env.items():
        monkeypatch.setenv(name, value)
    s3, ssm = aws
    bucket = autoscaling.Names("c22").bucket("123456789012", "us-east-1")
    image_store.ensure_bucket(s3, bucket, "us-east-1", "c22")
    s3.delete_bucket_policy(Bucket=bucket)
    inventory = Inventory(cluster="c22", key_file="k", hosts=[
        Host("orchestrator", "orchestrator", "198.51.100.1", "10.0.0.5")], autoscaling={
            "group": "c22-workers", "hook": "c22-drain", "bucket": bucket, "region": "us-east-1"})
    secrets = credentials.load_or_create(tmp_path / "secrets", "c22")
    archive = tmp_path / "image.tar.zst"
    archive.write_bytes(os.urandom(2**20))
    lines: list[str] = []
    compose = (ROOT / "docker-compose.yml").read_text()
    stored = image_store.publish(inventory, secrets, archive, Image("inferq-worker:abc", "sha256:" + "e" * 64),
                                 compose, lines.append, "-----BEGIN CERTIFICATE-----\nca\n")
    assert stored["key"] == image_store.image_key(image_store.sha256_of(archive))
    assert lines and "published inferq-worker:abc" in lines[0]
    values, image, got_compose, got_ca = boot.read_parameters(ssm, "c22")
    assert values["REDIS_URL"].startswith("rediss://inferq-worker:") and "@10.0.0.5:6379" in values["REDIS_URL"]
    assert values["INFERQ_REDIS_CA_FILE"] == config_files.WORKER_CA_SECRET
    # The CA goes to the hosts too, under the name compose's redis_ca secret reads.
    assert got_ca == "-----BEGIN CERTIFICATE-----\nca\n" and boot.CA_FILE == config_files.WORKER_CA_FILE
    assert values["INFERQ_WEBHOOK_SECRET"] == secrets.webhook_secret
    assert image == {"key": stored["key"], "sha256": stored["sha256"], "image_id": "sha256:" + "e" * 64,
                     "tag": "inferq-worker:abc"}
    assert got_compose == compose
    types = {p["Name"].rsplit("/", 1)[1]: p["Type"] for p in ssm.get_parameters_by_path(
        Path="/inferq/c22/worker/")["Parameters"]}
    assert types.pop("image") == types.pop("compose") == types.pop("redis-ca") == "String"
    assert set(types.values()) == {"SecureString"}
