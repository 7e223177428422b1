"""Blobs in an S3-compatible bucket (AWS S3, SeaweedFS, MinIO, ...), through boto3."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from product_studio.content_keys import check_key, check_prefix
from product_studio.errors import Misconfigured, ProductStudioError, TransientError
from product_studio.storage.base import BlobInfo, BlobReader, NotFound, check_expires

_MISSING = {"NoSuchKey", "404", "NotFound"}
_RETRYABLE = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError",
              "ServiceUnavailable"}

_REFUSED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden", "403"}

_session_lock = threading.Lock()


@cache
def _session() -> boto3.session.Session:
    # One session per process: it loads the service models once (a new one costs ~0.1 s per client).
    return boto3.session.Session()


@contextmanager
def _errors(what: str, key: str | None = None):
    """Translate botocore errors: network trouble and 5xx -> TransientError, no key -> NotFound."""
    try:
        yield
    except ClientError as e:
        err = e.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if key is not None and code in _MISSING:
            raise NotFound(key) from None
        msg = f"S3 {what}: {code or status} {err.get('Message') or ''}".rstrip()
        if status == 403 or code in _REFUSED:  # a setting to fix, not an outage
            raise Misconfigured(f"{msg}: the credentials were refused or may not do this (AWS_ACCESS_KEY_ID / "
                             "AWS_SECRET_ACCESS_KEY, or the storage URL's access_key and secret_key)") from e
        if status >= 500 or code in _RETRYABLE:
            raise TransientError(msg) from e
        # Missing bucket, denied access, bad credentials: configuration, so no retry.
        raise ProductStudioError(msg) from e
    except (BotoConnectionError, HTTPClientError) as e:
        raise TransientError(f"S3 {what}: {e}") from e
    except BotoCoreError as e:  # e.g. NoCredentialsError
        raise ProductStudioError(f"S3 {what}: {e}") from e


class S3Store:
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        addressing: str | None = None,
        max_attempts: int = 3,
        public_endpoint_url: str | None = None,
    ):
        prefix = prefix.strip("/")
        if prefix:
            check_key(prefix)
        self.bucket = bucket
        self.prefix = f"{prefix}/" if prefix else ""
        # Most self-hosted servers only understand path-style URLs (http://host/bucket/key).
        addressing = addressing or ("path" if endpoint_url else "auto")
        if addressing not in ("path", "virtual", "auto"):
            raise ValueError(f"addressing must be path, virtual or auto, not {addressing!r}")
        config = Config(
            signature_version="s3v4",
            s3={"addressing_style": addressing},
            retries={"mode": "standard", "max_attempts": max_attempts},  # then workers retry
            connect_timeout=5,
            read_timeout=60,
        )
        with _session_lock:  # creating clients from one session is not thread-safe
            # No region given: boto3's own (AWS_REGION, AWS_DEFAULT_REGION, profile), else us-east-1.
            self.region = region or _session().region_name or "us-east-1"
            clients = {endpoint: _session().client("s3", endpoint_url=endpoint, region_name=self.region,
                                                   aws_access_key_id=access_key, aws_secret_access_key=secret_key,
                                                   config=config)
                       for endpoint in {endpoint_url, public_endpoint_url or endpoint_url}}
        self.client = clients[endpoint_url]
        # Download links are signed for the address their readers use: a server on a private
        # network is reached by browsers and callback receivers through a public name or proxy.
        self.signer = clients[public_endpoint_url or endpoint_url]

    def __repr__(self) -> str:
        return f"S3Store({self.bucket!r}, {self.prefix!r}, endpoint_url={self.client.meta.endpoint_url!r})"

    def _name(self, key: str) -> str:
        return self.prefix + check_key(key)

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (safe when many workers race to do it)."""
        with _errors(f"open bucket {self.bucket}"):
            try:
                self.client.head_bucket(Bucket=self.bucket)
                return
            except ClientError as e:
                if e.response["Error"]["Code"] not in _MISSING | {"NoSuchBucket"}:
                    raise
        with _errors(f"create bucket {self.bucket}"):
            extra = {} if self.region == "us-east-1" else {
                "CreateBucketConfiguration": {"LocationConstraint": self.region}}
            try:
                self.client.create_bucket(Bucket=self.bucket, **extra)
            except ClientError as e:
                if e.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise
                self.client.head_bucket(Bucket=self.bucket)  # made meanwhile: fails if it is not ours

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        # One PutObject: S3 makes the object visible only once the whole body has arrived.
        name = self._name(key)
        with _errors(f"put {self.bucket}/{name}"):
            self.client.put_object(Bucket=self.bucket, Key=name, Body=data, ContentType=content_type)

    def get(self, key: str) -> bytes:
        name = self._name(key)
        with _errors(f"get {self.bucket}/{name}", key=key):
            return self.client.get_object(Bucket=self.bucket, Key=name)["Body"].read()

    def open_read(self, key: str) -> BlobReader:
        # One GetObject: the body is read from the connection as the caller asks for chunks.
        name = self._name(key)
        with _errors(f"get {self.bucket}/{name}", key=key):
            answer = self.client.get_object(Bucket=self.bucket, Key=name)
        return BlobReader(_Body(answer["Body"], f"get {self.bucket}/{name}"), answer["ContentLength"])

    def exists(self, key: str) -> bool:
        name = self._name(key)
        try:
            with _errors(f"head {self.bucket}/{name}", key=key):
                self.client.head_object(Bucket=self.bucket, Key=name)
        except NotFound:
            return False
        return True

    def delete(self, key: str) -> None:
        name = self._name(key)
        with _errors(f"delete {self.bucket}/{name}"):
            self.client.delete_object(Bucket=self.bucket, Key=name)

    def url(self, key: str, expires: int = 3600) -> str:
        # Signed locally with the client's credentials; no request is made.
        name = self._name(key)
        with _errors(f"presign {self.bucket}/{name}"):
            return self.signer.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": name}, ExpiresIn=check_expires(expires)
            )

    def keys(self, prefix: str = "") -> Iterator[str]:
        check_prefix(prefix)  # here, not in the generator: a bad prefix fails at the call
        return self._list(self.prefix + prefix)

    def _list(self, full_prefix: str) -> Iterator[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full_prefix)
        with _errors(f"list {self.bucket}/{full_prefix}"):
            for page in pages:
                for obj in page.get("Contents", ()):
                    yield obj["Key"][len(self.prefix):]

    def listing(self, prefix: str = "") -> Iterator[BlobInfo]:
        check_prefix(prefix)
        return self._list_info(self.prefix + prefix)

    def _list_info(self, full_prefix: str) -> Iterator[BlobInfo]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full_prefix)
        with _errors(f"list {self.bucket}/{full_prefix}"):
            for page in pages:
                for obj in page.get("Contents", ()):
                    yield BlobInfo(obj["Key"][len(self.prefix):], int(obj.get("Size", 0)),
                                   obj["LastModified"].timestamp())


class _Body:
    """A GetObject body whose read errors are translated as every other S3 error is."""

    def __init__(self, body, what: str):
        self.body, self.what = body, what

    def read(self, n: int = -1) -> bytes:
        with _errors(self.what):
            return self.body.read(None if n < 0 else n)

    def close(self) -> None:
        self.body.close()
