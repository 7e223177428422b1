"""Issue 17 item 8: memory does not grow with the request. Downloads and approved.zip are streamed
from the store a chunk at a time (BlobStore.open_read), so the web process holds one chunk, not
the whole file or the whole zip. Checked by driving the ASGI app directly and counting the body
messages as they are sent, and with tracemalloc on a zip much larger than a chunk."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import tracemalloc
import zipfile
from urllib.parse import urlsplit

import pytest

from product_studio import runtime
from product_studio.models import Asset, Job, Variant
from product_studio.storage import NotFound
from product_studio.storage.base import CHUNK_SIZE
from tests.test_storage import s3_endpoint, s3_store, store  # noqa: F401 - fixtures: both stores
from tests.web_helpers import fresh_app

MIB = 1024 * 1024


# --- the stores -------------------------------------------------------------------------------

def test_open_read_streams_in_chunks(store):
    data = os.urandom(3 * CHUNK_SIZE + 123)
    store.put("big/blob.bin", data)
    reader = store.open_read("big/blob.bin")
    assert reader.size == len(data)
    chunks = list(reader.chunks())
    assert len(chunks) >= 4 and all(len(c) <= CHUNK_SIZE for c in chunks)
    assert b"".join(chunks) == data
    with store.open_read("big/blob.bin") as r:  # a context manager too; read(n) reads part
        assert r.read(10) == data[:10]


def test_open_read_of_a_missing_key_fails_at_the_call(store):
    with pytest.raises(NotFound):
        store.open_read("nothing/here.bin")  # not lazily: a download answers 404 before streaming


# --- the web door -----------------------------------------------------------------------------

def _call(app, path: str, headers: dict[str, str], on_body=None) -> tuple[int, dict[str, str], int, int]:
    """GET `path` on the ASGI app; each body chunk goes to `on_body` and is then dropped.
    Returns the status, headers, number of non-empty body messages and total bytes."""
    parts = urlsplit(path)
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
             "scheme": "https", "path": parts.path, "raw_path": parts.path.encode(),
             "query_string": parts.query.encode(), "root_path": "",
             "headers": [(k.lower().encode(), v.encode()) for k, v in (headers | {"host": "testserver"}).items()],
             "client": ("127.0.0.1", 1234), "server": ("testserver", 443)}
    out = {"status": 0, "headers": {}, "messages": 0, "bytes": 0}

    requested = []

    async def receive():
        if not requested:
            requested.append(True)
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # the client stays connected (StreamingResponse listens for a disconnect)

    async def send(message):
        if message["type"] == "http.response.start":
            out["status"] = message["status"]
            out["headers"] = {k.decode(): v.decode() for k, v in message["headers"]}
        elif message["type"] == "http.response.body" and message.get("body"):
            out["messages"] += 1
            out["bytes"] += len(message["body"])
            if on_body:
                on_body(message["body"])

    asyncio.run(app(scope, receive, send))
    return out["status"], out["headers"], out["messages"], out["bytes"]


@pytest.fixture
def web(monkeypatch, tmp_path):
    app, key = fresh_app(monkeypatch, tmp_path)
    return app, {"authorization": f"Bearer {key}"}


def _approved_job(blobs: dict[str, bytes]) -> tuple[str, list[str]]:
    """A job whose photo has one approved variant per blob (written to the store as its file)."""
    store = runtime.store()
    with runtime.database().session() as s:
        job = Job(origin="upload", params={})
        asset = Asset(job=job, position=0, name="cup", sha256="0" * 64, source_key="sources/x.jpg", width=1,
                      height=1)
        s.add(job)
        ids = []
        for i, (key, data) in enumerate(blobs.items()):
            store.put(key, data)
            v = Variant(asset=asset, target="ebay", scene="", seed=i, status="done", key=key,
                        content_type="image/jpeg", bytes=len(data), approved=True)
            s.add(v)
            s.flush()
            ids.append(v.id)
        s.commit()
        return job.id, ids


def test_variant_download_and_signed_file_are_streamed(web):
    app, auth = web
    data = os.urandom(4 * CHUNK_SIZE + 7)
    job_id, [variant_id] = _approved_job({"variants/big.jpg": data})
    digest = hashlib.sha256()
    status, headers, messages, size = _call(app, f"/api/v1/variants/{variant_id}/download", auth, digest.update)
    assert status == 200 and size == len(data) and digest.digest() == hashlib.sha256(data).digest()
    assert messages >= 5, "sent whole: the download was read into memory"
    assert headers["content-length"] == str(len(data)) and "attachment" in headers["content-disposition"]

    url = urlsplit(runtime.store().url("variants/big.jpg"))
    status, headers, messages, size = _call(app, f"{url.path}?{url.query}", {})
    assert status == 200 and size == len(data) and messages >= 5
    assert headers["content-length"] == str(len(data))
    missing = urlsplit(runtime.store().url("variants/none.jpg"))
    assert _call(app, f"{missing.path}?{missing.query}", {})[0] == 404


def test_approved_zip_is_streamed_with_flat_memory(web):
    """A 48 MiB zip of six 8 MiB files: chunks are sent as the zip is made, the zip is whole and
    right, and the traced peak stays within a few chunks (it was the whole zip, twice)."""
    app, auth = web
    blobs = {f"variants/v{i}.jpg": os.urandom(8 * MIB) for i in range(6)}
    job_id, _ = _approved_job(blobs)
    expected = {k: hashlib.sha256(v).hexdigest() for k, v in blobs.items()}
    del blobs
    tracemalloc.start()
    try:
        status, headers, messages, size = _call(app, f"/api/v1/jobs/{job_id}/approved.zip", auth)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert status == 200 and headers["content-type"] == "application/zip"
    assert size > 48 * MIB and messages >= 48
    assert peak < 12 * MIB, f"peak {peak / MIB:.1f} MiB while sending a {size / MIB:.0f} MiB zip"

    # The same zip, kept this time, is a valid archive of every file, stored uncompressed.
    zipped = io.BytesIO()
    _call(app, f"/api/v1/jobs/{job_id}/approved.zip", auth, zipped.write)
    zf = zipfile.ZipFile(zipped)
    assert zf.testzip() is None
    infos = zf.infolist()
    assert [i.compress_type for i in infos] == [zipfile.ZIP_STORED] * 6
    assert sorted(hashlib.sha256(zf.read(i)).hexdigest() for i in infos) == sorted(expected.values())
    assert all(i.filename.startswith("001-cup/cup-ebay") for i in infos)


def test_admin_zip_and_download_still_work(web):
    """The admin pages' zip and download go through the same streaming code."""
    from fastapi.testclient import TestClient

    from tests.web_helpers import sign_in

    app, _ = web
    data = os.urandom(CHUNK_SIZE + 1)
    job_id, [variant_id] = _approved_job({"variants/one.jpg": data})
    client = TestClient(app, base_url="https://testserver")
    sign_in(client)
    r = client.get(f"/jobs/{job_id}/approved.zip")
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    zf = zipfile.ZipFile(io.BytesIO(r.content))
    assert [zf.read(n) for n in zf.namelist()] == [data]
    assert client.get(f"/variants/{variant_id}/download").content == data
