"""The moto test server's preload (benchmark setup): objects put through moto's backend read
back exactly as uploaded ones do, and cost no request."""

from __future__ import annotations

import boto3
import pytest

pytestmark = pytest.mark.s3


def test_preloaded_objects_read_back_like_uploaded_ones(s3_traffic, s3_bucket, png_pool):
    bucket, _options = s3_bucket
    paths = png_pool(3)
    s3_traffic.reset()
    assert s3_traffic.preload(bucket, "pre", paths) == 3
    assert s3_traffic.requests == []  # no HTTP: setup, not traffic
    client = boto3.client("s3", endpoint_url=s3_traffic.endpoint_url, region_name="us-east-1")
    for path in paths:
        client.put_object(Bucket=bucket, Key=f"put/{path.name}", Body=path.read_bytes())
    listed = client.list_objects_v2(Bucket=bucket, Prefix="pre/")["Contents"]
    assert sorted(item["Key"] for item in listed) == [f"pre/{p.name}" for p in paths]
    for path in paths:
        pre = client.get_object(Bucket=bucket, Key=f"pre/{path.name}")
        put = client.get_object(Bucket=bucket, Key=f"put/{path.name}")
        assert pre["Body"].read() == path.read_bytes()
        assert pre["ETag"] == put["ETag"]


def test_preload_needs_a_started_server():
    from s3server import MotoS3Server

    with pytest.raises(RuntimeError, match="not started"):
        MotoS3Server().preload("b", "", [])
