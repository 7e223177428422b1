"""Blob storage shared by web, CLI and workers on many machines: local filesystem or S3-compatible.

Writes are atomic (readers see all of an object or nothing) and keys are content-addressed
(`content_key`), so a retried or duplicated task finds its output already there.

Importing this package stays light: boto3 is imported only when an s3:// store is opened.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from ..content_keys import check_key, check_prefix, content_key
from .base import MAX_URL_EXPIRES, BlobInfo, BlobReader, BlobStore, NotFound, check_expires

__all__ = ["MAX_URL_EXPIRES", "BlobInfo", "BlobReader", "BlobStore", "NotFound", "check_expires", "check_key", "check_prefix",
           "check_url", "content_key", "is_local", "open_store"]


def is_local(url: str) -> bool:
    """Whether a storage URL names local files (a plain path or file://), whose download links
    this process signs itself, rather than an object store that signs its own."""
    return "://" not in url or urlsplit(url).scheme == "file"


def open_store(url: str, *, secret: str, public_base_url: str | None = None) -> BlobStore:
    """Open a store from a URL.

    - a plain path or "file:///abs/path": LocalStore; `secret` signs its download URLs and
      `public_base_url` (e.g. "https://studio.example.com") prefixes them.
    - "s3://bucket[/prefix][?endpoint=http://127.0.0.1:8333&region=us-east-1&addressing=path]":
      S3Store. Credentials come from boto3's usual chain (AWS_ACCESS_KEY_ID /
      AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ~/.aws, instance roles); `access_key` and `secret_key`
      query parameters override it (avoid them where the URL may be logged; percent-encode
      values, as AWS secrets may hold "+" and "/"). `region` defaults to boto3's own, then
      us-east-1. `addressing`
      defaults to "path" when an endpoint is given (SeaweedFS, MinIO), else "auto".
      `public_endpoint` (e.g. https://files.example.com) is the address download links are signed
      for, when browsers and callback receivers reach the server by another name than `endpoint`
      (a private address); the server must see that name as the request's Host, and any path in
      it as the request's path (SigV4 signs both).
      Opening touches no network: call `ensure_bucket()` once at start-up if needed.
    """
    if is_local(url):
        from product_studio.storage.local import LocalStore

        return LocalStore(_local_path(url), secret, public_base_url)
    from product_studio.storage.s3 import S3Store

    return S3Store(**_s3_options(url))


def check_url(url: str) -> None:
    """Parse a storage URL as open_store does, opening nothing (no client, no request): ValueError
    naming what is wrong."""
    if is_local(url):
        _local_path(url)
    else:
        _s3_options(url)


def _local_path(url: str) -> Path:
    if "://" not in url:
        return Path(url)
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost") or parts.query:
        raise ValueError(f"storage URL {url!r}: use file:///absolute/path")
    return Path(parts.path)


def _s3_options(url: str) -> dict:
    """S3Store's arguments from an s3:// URL (open_store says which options there are)."""
    parts = urlsplit(url)
    if parts.scheme != "s3":
        raise ValueError(f"unsupported storage URL scheme {parts.scheme!r}; use a path, file:// or s3://")
    query = {k: v[-1] for k, v in parse_qs(parts.query, strict_parsing=bool(parts.query)).items()}
    allowed = {"endpoint", "public_endpoint", "region", "access_key", "secret_key", "addressing"}
    if unknown := set(query) - allowed:
        raise ValueError(f"storage URL: unknown s3 option(s) {sorted(unknown)}; known: {sorted(allowed)}")
    if not parts.netloc:
        raise ValueError(f"storage URL {url!r}: no bucket; use s3://bucket/prefix")
    for option in ("endpoint", "public_endpoint"):
        given = urlsplit(query.get(option, "http://h"))
        if given.scheme not in ("http", "https") or not given.netloc or given.query or given.fragment:
            raise ValueError(f"storage URL: {option} must be http(s)://host[:port], not {query[option]!r}")
    return {"bucket": parts.netloc, "prefix": parts.path.strip("/"), "endpoint_url": query.get("endpoint"),
            "region": query.get("region"), "access_key": query.get("access_key"),
            "secret_key": query.get("secret_key"), "addressing": query.get("addressing"),
            "public_endpoint_url": query.get("public_endpoint")}
