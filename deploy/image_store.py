"""Where hosts of the worker group find the worker image and their secrets by themselves (issue 22, item 2, part).

- The image: the cluster's private bucket ``inferq-<cluster>-<account>-<region>``
  (public access blocked, default encryption SSE-S3, TLS-only policy, the cluster's
  tag), one object per image, ``images/sha256-<hex>.tar.zst``: the ``docker save |
  zstd`` stream, named by the SHA-256 of its bytes, written with SSE.
- The secrets: SSM parameters under ``/inferq/<cluster>/worker/``, SecureString (the
  AWS-managed ``aws/ssm`` key), one per worker.env line; ``.../image`` (a String)
  says which object and which image id the hosts run.
- ``fetch_image`` is what a booting host does with them: read ``image``, download
  the object, and refuse it unless its bytes hash to the name.

Only the worker role may read them (deploy/autoscaling.py's policy). ``fab deploy`` and
``fab update`` publish through ``publish``; a host's boot script (deploy/boot.py) reads them.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from inferq.deploy import boot, defaults
from inferq.deploy.errors import DeployError, aws_call

IMAGE_PARAMETER, COMPOSE_PARAMETER = boot.IMAGE_PARAMETER, boot.COMPOSE_PARAMETER
"""Parameters under the worker path besides the secrets: the image ({"key", "sha256", "image_id", "tag"} as JSON)
and the compose file the hosts run."""

sha256_of, image_key, parameter_path = boot.sha256_of, boot.image_key, boot.parameter_path


def ensure_bucket(s3: Any, bucket: str, region: str, cluster: str) -> bool:
    """The cluster's bucket: private, encrypted by default, TLS only, tagged. True if it was made now."""
    from botocore.exceptions import ClientError

    try:
        s3.head_bucket(Bucket=bucket)
        made = False
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
            raise DeployError(f"bucket {bucket} exists and is not this account's to use: "
                              f"{exc.response.get('Error', {}).get('Code')}") from None
        with aws_call(f"creating bucket {bucket}"):
            where = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
            s3.create_bucket(Bucket=bucket, **where)
        made = True
    with aws_call(f"locking down bucket {bucket}"):
        s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration={
            "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True})
        s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})
        s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [{
            "Sid": "TlsOnly", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
            "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]}))
        s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": [{"Key": defaults.TAG_KEY, "Value": cluster}]})
    return made


def put_image(s3: Any, bucket: str, path: Path, image_id: str, tag: str = "") -> dict[str, str]:
    """Upload the saved image (once per digest); what the image parameter says."""
    from botocore.exceptions import ClientError

    sha256 = sha256_of(path)
    key = image_key(sha256)
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError:
        from boto3.exceptions import S3UploadFailedError

        with aws_call(f"uploading the worker image to s3://{bucket}/{key}"):
            try:
                s3.upload_file(str(path), bucket, key, ExtraArgs={
                    "ServerSideEncryption": "AES256", "Metadata": {"sha256": sha256, "image-id": image_id}})
            except S3UploadFailedError as exc:  # boto3's transfer wraps the ClientError in its own
                raise DeployError(f"uploading the worker image to s3://{bucket}/{key} failed: {exc}") from None
    return {"key": key, "sha256": sha256, "image_id": image_id, "tag": tag}


def put_parameters(ssm: Any, cluster: str, secrets: dict[str, str], image: dict[str, str], compose: str = "",
                   ca_pem: str = "") -> None:
    """The worker secrets as SecureString parameters, the image parameter, the compose file and the cluster's CA;
    overwritten."""
    path = parameter_path(cluster)
    with aws_call(f"writing the worker parameters under {path}"):
        for name, value in sorted(secrets.items()):
            ssm.put_parameter(Name=path + name, Value=value, Type="SecureString", Overwrite=True)
        ssm.put_parameter(Name=path + IMAGE_PARAMETER, Value=json.dumps(image), Type="String", Overwrite=True)
        if compose:
            ssm.put_parameter(Name=path + COMPOSE_PARAMETER, Value=compose, Type="String", Overwrite=True)
        if ca_pem:
            ssm.put_parameter(Name=path + boot.CA_PARAMETER, Value=ca_pem, Type="String", Overwrite=True)


def read_parameters(ssm: Any, cluster: str) -> tuple[dict[str, str], dict[str, str]]:
    """(the secrets, the image parameter), decrypted, as a booting host reads them (deploy/boot.py)."""
    with aws_call(f"reading the worker parameters under {parameter_path(cluster)}"):
        try:
            secrets, image, _compose, _ca = boot.read_parameters(ssm, cluster)
        except boot.BootError as exc:
            raise DeployError(str(exc)) from None
    return secrets, image


def fetch_image(s3: Any, bucket: str, image: dict[str, str], dest: Path) -> Path:
    """Download the image the parameter names and check its bytes against its digest; DeployError if they differ."""
    with aws_call(f"downloading s3://{bucket}/{image['key']}"):
        try:
            return boot.fetch_image(s3, bucket, image, dest)
        except boot.BootError as exc:
            raise DeployError(str(exc)) from None


def delete_all(s3: Any, ssm: Any, cluster: str, bucket: str) -> list[str]:
    """Delete the bucket (its objects, every version) and the parameters; what was deleted."""
    from botocore.exceptions import ClientError

    deleted = []
    try:
        s3.head_bucket(Bucket=bucket)
        present = True
    except ClientError:
        present = False
    if present:
        with aws_call(f"deleting bucket {bucket}"):
            for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
                doomed = [{"Key": v["Key"], "VersionId": v["VersionId"]}
                          for v in page.get("Versions", []) + page.get("DeleteMarkers", [])]
                if doomed:
                    s3.delete_objects(Bucket=bucket, Delete={"Objects": doomed})
            s3.delete_bucket(Bucket=bucket)
        deleted.append(f"bucket {bucket}")
    path = parameter_path(cluster)
    with aws_call(f"deleting the parameters under {path}"):
        names = [p["Name"] for page in ssm.get_paginator("get_parameters_by_path").paginate(Path=path)
                 for p in page["Parameters"]]
        for start in range(0, len(names), 10):
            ssm.delete_parameters(Names=names[start:start + 10])
    if names:
        deleted.append(f"{len(names)} parameter(s) under {path}")
    return deleted


def publish(inventory: Any, secrets: Any, archive: Path, image: Any, compose: str, report,
            ca_pem: str = "") -> dict[str, str]:
    """`fab deploy` and `fab update` with a worker group: the image (its `docker save | zstd` archive, made once
    for the fixed hosts too) into the bucket, worker.env's values, the image and the compose file into the
    parameters. Hosts the group launches from then on boot this image (deploy/boot.py). What it returns is what the
    image parameter now says, and previous_sha256: the digest it named before (empty on a first publish), so the
    caller knows whether the hosts already in the group must be replaced (deploy/operations.py)."""
    import boto3

    from inferq.deploy import config_files

    group = inventory.autoscaling
    s3, ssm = (boto3.client(service, region_name=group["region"]) for service in ("s3", "ssm"))
    stored = put_image(s3, group["bucket"], archive, image.id, image.tag)
    values = dict(line.split("=", 1) for line in config_files.worker_env(inventory, secrets).splitlines() if line)
    before = published(ssm, inventory.cluster)
    put_parameters(ssm, inventory.cluster, values, stored, compose, ca_pem)
    report(f"worker group {group['group']}: published {image.tag} ({image.short}) as s3://{group['bucket']}/"
           f"{stored['key']} and {len(values)} secret parameter(s) under {parameter_path(inventory.cluster)}; "
           "hosts it launches from now on run this image")
    return {**stored, "previous_sha256": before.get("sha256", "") if before else ""}


def published(ssm: Any, cluster: str) -> dict[str, str] | None:
    """The image parameter as it stands (which image the group's hosts boot), None before a first publish."""
    from botocore.exceptions import ClientError

    with aws_call(f"reading {parameter_path(cluster)}{IMAGE_PARAMETER}"):
        try:
            return json.loads(ssm.get_parameter(Name=parameter_path(cluster) + IMAGE_PARAMETER)["Parameter"]["Value"])
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ParameterNotFound":
                return None
            raise
