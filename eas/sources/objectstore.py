"""Object storage (OSS and S3) through the S3-compatible API: one client for both.

`oss://bucket/key` and `s3://bucket/key` name objects; a key ending in `/` names every
object under it (a model directory). Alibaba OSS speaks the S3 API, so boto3 pointed at
an OSS endpoint serves both schemes (the `objectstore` extra installs boto3).

Settings come from the service JSON (`oss_endpoint`) or the environment, read by the
server, its instances and eascmd alike:

| variable | meaning |
|---|---|
| `EAS_OSS_ENDPOINT` | endpoint for oss:// (and s3:// when set), e.g. `oss-cn-hangzhou.aliyuncs.com` or `http://127.0.0.1:9000` |
| `EAS_OSS_ACCESS_KEY_ID`, `EAS_OSS_ACCESS_KEY_SECRET` | credentials; without them boto3's own chain (AWS_* variables, ~/.aws) is used |
| `EAS_OSS_REGION` | signing region (default: taken from an `oss-<region>` endpoint, else us-east-1) |
| `EAS_OSS_UPLOAD_PATH` | where `eascmd upload` puts files, e.g. `oss://my-bucket/models/` |
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlparse

SCHEMES = ("oss", "s3")
ENV_ENDPOINT = "EAS_OSS_ENDPOINT"
ENV_KEY_ID = "EAS_OSS_ACCESS_KEY_ID"
ENV_KEY_SECRET = "EAS_OSS_ACCESS_KEY_SECRET"
ENV_REGION = "EAS_OSS_REGION"
ENV_UPLOAD_PATH = "EAS_OSS_UPLOAD_PATH"
#: Variables an instance on another node needs to read models (ray_backend passes them on).
ENV_VARS = (ENV_ENDPOINT, ENV_KEY_ID, ENV_KEY_SECRET, ENV_REGION)


class ObjectStoreError(Exception):
    """The object cannot be read or written; the text says why and what to fix."""


@dataclass(frozen=True)
class ObjectUrl:
    scheme: str
    bucket: str
    key: str

    @property
    def is_prefix(self) -> bool:
        return self.key == "" or self.key.endswith("/")

    def __str__(self) -> str:
        return f"{self.scheme}://{self.bucket}/{self.key}"


def parse(url: str) -> ObjectUrl:
    parts = urlparse(url)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES or not parts.netloc:
        raise ObjectStoreError(f"{url}: write object paths as oss://bucket/key or s3://bucket/key")
    return ObjectUrl(scheme, parts.netloc, parts.path.lstrip("/"))


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    etag: str
    size: int


def endpoint_url(scheme: str, endpoint: str | None = None) -> str | None:
    """The endpoint to call: the service's `oss_endpoint`, else EAS_OSS_ENDPOINT; http(s) added."""
    endpoint = endpoint or os.environ.get(ENV_ENDPOINT) or None
    if not endpoint:
        if scheme == "oss":
            raise ObjectStoreError("oss:// paths need an endpoint: set 'oss_endpoint' in the service JSON "
                                   f"or {ENV_ENDPOINT} on the server (e.g. oss-cn-hangzhou.aliyuncs.com)")
        return None  # s3:// without an endpoint: AWS itself
    return endpoint if "://" in endpoint else f"https://{endpoint}"


def _path_style(url: str | None) -> bool:
    """Virtual-host addressing (bucket.host) is what OSS wants; an IP or localhost cannot do it."""
    if not url:
        return False
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return True
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def _region(url: str | None) -> str:
    if os.environ.get(ENV_REGION):
        return os.environ[ENV_REGION]
    host = urlparse(url).hostname if url else ""
    label = (host or "").split(".")[0]
    if label.startswith("oss-"):
        return label.removesuffix("-internal")
    return "us-east-1"


def client(scheme: str, endpoint: str | None = None) -> Any:
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise ObjectStoreError("object storage paths need boto3: pip install 'eas-serving[objectstore]'") from None
    url = endpoint_url(scheme, endpoint)
    config = Config(
        signature_version="s3v4",
        s3={"addressing_style": "path" if _path_style(url) else "virtual"},
        retries={"max_attempts": 3, "mode": "standard"},
        connect_timeout=10,
        read_timeout=60,
    )
    kwargs: dict[str, Any] = {"endpoint_url": url, "region_name": _region(url), "config": config}
    if os.environ.get(ENV_KEY_ID):
        kwargs["aws_access_key_id"] = os.environ[ENV_KEY_ID]
        kwargs["aws_secret_access_key"] = os.environ.get(ENV_KEY_SECRET, "")
    return boto3.session.Session().client("s3", **kwargs)


def _explain(exc: Exception, what: str) -> ObjectStoreError:
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("404", "NoSuchKey", "NotFound"):
            return ObjectStoreError(f"{what} does not exist: check the bucket and key")
        if code == "NoSuchBucket":
            return ObjectStoreError(f"{what}: the bucket does not exist")
        if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return ObjectStoreError(f"{what}: access denied ({code}); check {ENV_KEY_ID}/{ENV_KEY_SECRET}")
        return ObjectStoreError(f"{what}: {code or status} {exc}")
    if isinstance(exc, BotoCoreError):
        return ObjectStoreError(f"{what}: {exc}")
    return ObjectStoreError(f"{what}: {type(exc).__name__}: {exc}")


def stat(url: ObjectUrl, endpoint: str | None = None, limit: int | None = None) -> list[ObjectInfo]:
    """The object (one entry), or every object under a prefix; raises if there is none.

    A key without a trailing slash that names no object but a "directory" is read as one.
    With `limit`, listing stops after limit + 1 objects (the caller refuses more than limit).
    """
    s3 = client(url.scheme, endpoint)
    try:
        if not url.is_prefix:
            try:
                head = s3.head_object(Bucket=url.bucket, Key=url.key)
                return [ObjectInfo(url.key, head["ETag"].strip('"'), int(head["ContentLength"]))]
            except Exception as exc:
                if "404" not in str(exc) and "Not Found" not in str(exc):
                    raise
            prefix = url.key + "/"
        else:
            prefix = url.key
        found = []
        for item in _list(s3, url.bucket, prefix):
            found.append(item)
            if limit is not None and len(found) > limit:
                break
    except ObjectStoreError:
        raise
    except Exception as exc:
        raise _explain(exc, str(url)) from None
    if not found:
        raise ObjectStoreError(f"{url} does not exist: check the bucket and key")
    return found


def _list(s3: Any, bucket: str, prefix: str) -> Iterator[ObjectInfo]:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents") or []:
            if not item["Key"].endswith("/"):  # "folder" placeholder objects
                yield ObjectInfo(item["Key"], item["ETag"].strip('"'), int(item["Size"]))


def download(url: ObjectUrl, key: str, dest: Path, endpoint: str | None = None,
             deadline: float | None = None) -> None:
    """Download one object; with `deadline` (time.monotonic()), give up once it passes."""
    import time

    s3 = client(url.scheme, endpoint)
    what = f"{url.scheme}://{url.bucket}/{key}"

    def in_time(_: int) -> None:
        if deadline is not None and time.monotonic() > deadline:
            raise ObjectStoreError(f"{what}: the download took too long")

    try:
        s3.download_file(url.bucket, key, str(dest), Callback=in_time)
    except ObjectStoreError:
        raise
    except Exception as exc:
        raise _explain(exc, what) from None


def upload(path: Path, dest: ObjectUrl, endpoint: str | None = None) -> ObjectInfo:
    s3 = client(dest.scheme, endpoint)
    try:
        s3.upload_file(str(path), dest.bucket, dest.key)
        head = s3.head_object(Bucket=dest.bucket, Key=dest.key)
    except Exception as exc:
        raise _explain(exc, f"upload to {dest}") from None
    return ObjectInfo(dest.key, head["ETag"].strip('"'), int(head["ContentLength"]))
