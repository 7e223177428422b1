"""The production layout on one machine, with no shared disk (issue 17, item 10).

The web door (`serve --no-worker`) and two workers each start on an empty data folder of their
own, as on three machines; they share only PostgreSQL (a schema of this test's own), Redis (a
private server) and an S3 server (SeaweedFS), and the signing secrets, set once in the
environment. A job uploaded through the API is processed by both workers; one is killed with
kill -9 midway and the other finishes everything. Then: the signed download links the web door
made work, its downloads and gallery previews too; a second web door on a data folder of its own
takes the first one's session cookie; the completion callback verifies with the shared secret; a
mask saved through the web door is what the surviving worker renders with; and no worker wrote
anything into its data folder (nothing another machine could need is left on a local disk).
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select
from webhook_stack import EXE, Loopback, free_port, photo, wait_until_serving

from product_studio import callbacks
from product_studio.auth import add_user, create_key
from product_studio.db import Database
from product_studio.models import Variant
from product_studio.storage import open_store
from tests.test_db import PG_URL, postgres_admin  # noqa: F401 (a fixture)
from tests.test_storage import ACCESS_KEY, BUCKET, SECRET_KEY, s3_endpoint  # noqa: F401 (a fixture)
from tests.test_worker import RedisServer

pytestmark = [pytest.mark.service, pytest.mark.slow]

TARGETS = ["ebay", "shopify-square", "google-shopping"]
PHOTOS = 8
PASSWORD = "many machines, one database"
SECRETS = {"PRODUCT_STUDIO_SESSION_SECRET": "shared-session-secret-0d1f",
           "PRODUCT_STUDIO_STORAGE_SECRET": "shared-storage-secret-77a2",
           "PRODUCT_STUDIO_CALLBACK_SECRET": "shared-callback-secret-4c9e"}
SUCCEEDED = re.compile(r"Task (\w+)\[[0-9a-f-]+\] succeeded")



def clean_env(**settings: str) -> dict[str, str]:
    """This environment without any PRODUCT_STUDIO_ setting, plus `settings` (full names)."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("PRODUCT_STUDIO_")}, **settings}


def fresh_schema(request) -> str:
    """The URL of a PostgreSQL schema of the test's own, dropped after it."""
    from sqlalchemy.engine import make_url

    admin = request.getfixturevalue("postgres_admin")
    schema = f"test_mm_{uuid.uuid4().hex[:12]}"
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')

    def drop() -> None:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')

    request.addfinalizer(drop)
    url = make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.service)])
def shared_database(request, tmp_path) -> str:
    """One database for several processes: a SQLite file outside their data folders, or a
    PostgreSQL schema."""
    return fresh_schema(request) if request.param == "postgresql" else f"sqlite:///{tmp_path / 'shared.db'}"


class Machine:
    """One process of Product Studio as if on a machine of its own: its own empty data folder,
    the shared settings in its environment, its own log."""

    def __init__(self, root: Path, name: str, shared_env: dict[str, str]):
        self.name, self.data, self.log = name, root / name, root / f"{name}.log"
        self.data.mkdir()
        self.env = {**shared_env, "PRODUCT_STUDIO_DATA_DIR": str(self.data)}
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None

    def start(self, *args: str) -> Machine:
        self.proc = subprocess.Popen([str(EXE), *args], env=self.env, stdout=open(self.log, "w"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def serve(self) -> Machine:
        self.port = free_port()
        self.start("serve", "--no-worker", "--port", str(self.port))
        wait_until_serving(self.base, self.log)
        return self

    def work(self) -> Machine:
        return self.start("worker", "--queues", "cpu-intake,cpu", "--concurrency", "1", "--loglevel", "info")

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def tasks_done(self) -> int:
        return len(SUCCEEDED.findall(self.log.read_text(errors="replace")))

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)  # the whole worker, no goodbye
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                pytest.fail(f"{self.name} did not stop on SIGTERM")


@pytest.fixture
def layout(request, tmp_path, s3_endpoint):  # noqa: F811 (a fixture)
    """Shared services and settings: (environment, database, blob store, callback receiver)."""
    database_url = fresh_schema(request)
    redis = RedisServer(tmp_path)
    redis.start()
    receiver = Loopback()
    env = clean_env()
    env.update({"PRODUCT_STUDIO_DATABASE_URL": database_url,
                "PRODUCT_STUDIO_BROKER_URL": redis.url,
                "PRODUCT_STUDIO_STORAGE_URL": f"s3://{BUCKET}/mm-{uuid.uuid4().hex}?endpoint={s3_endpoint}",
                "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, **SECRETS,
                "PRODUCT_STUDIO_REQUEUE_AFTER": "6", "PRODUCT_STUDIO_SWEEP_INTERVAL": "1",
                "PRODUCT_STUDIO_BROKER_VISIBILITY_TIMEOUT": "30",
                "PRODUCT_STUDIO_SESSION_COOKIE_SECURE": "false",  # plain HTTP on loopback
                "PRODUCT_STUDIO_FETCH_ALLOW": "127.0.0.1",  # the callback receiver is on loopback
                "PYTHONUNBUFFERED": "1"})
    old_aws = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ.update({"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY})
    db = Database(env["PRODUCT_STUDIO_DATABASE_URL"])
    blobs = open_store(env["PRODUCT_STUDIO_STORAGE_URL"], secret="unused: S3 signs its own links")
    try:
        yield env, db, blobs, receiver
    finally:
        db.dispose()
        receiver.stop()
        redis.stop()
        for k, v in old_aws.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def wait_for(what: str, check, machines: list[Machine], timeout: float = 180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.3)
    logs = "\n".join(f"--- {m.name}\n{m.log.read_text(errors='replace')[-2500:]}" for m in machines)
    pytest.fail(f"timed out waiting for {what}\n{logs}")


def variant_keys(db: Database, ids: list[str]) -> dict[str, str | None]:
    """Each variant's stored file (its content key), read from the database."""
    with db.session() as s:
        return dict(s.execute(select(Variant.id, Variant.key).where(Variant.id.in_(ids))).all())


def files_in(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_web_door_and_two_workers_share_no_disk(tmp_path, layout):
    env, db, blobs, receiver = layout
    web = Machine(tmp_path, "web", env).serve()  # migrates the schema
    workers = [Machine(tmp_path, f"worker{i}", env).work() for i in (1, 2)]
    web2 = Machine(tmp_path, "web2", env)
    machines = [web, *workers, web2]
    try:
        with db.session() as s:
            add_user(s, "ops", PASSWORD)
            key = create_key(s, "many-machines").key
        api = httpx.Client(base_url=f"{web.base}/api/v1", headers={"Authorization": f"Bearer {key}"}, timeout=60)

        def job() -> dict:
            return api.get(f"/jobs/{job_id}").json()

        def finished() -> dict | None:
            doc = job()
            return doc if doc["status"] in ("done", "partial", "failed") else None

        # --- a job through the API, both workers on it, one killed midway -----------------------
        t0 = time.monotonic()
        r = api.post("/jobs", files=[("files", (f"cup{i}.jpg", photo(i, 320), "image/jpeg")) for i in range(PHOTOS)],
                     data={"targets": TARGETS, "title": "Espresso cup", "callback_url": receiver.url("/callback")})
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        expected = PHOTOS * len(TARGETS)

        def midway() -> dict | None:  # both workers busy on it, a quarter of the variants done
            doc = job()
            if doc["status"] in ("done", "partial", "failed"):
                pytest.fail(f"the job ended before a worker could be killed: {[w.tasks_done() for w in workers]}")
            busy = all(w.tasks_done() >= 3 for w in workers)
            return doc if busy and doc["progress"]["done"] >= expected // 4 else None

        doc = wait_for("both workers to work on the job", midway, machines)
        workers[0].kill()
        killed_at = {"worker1": workers[0].tasks_done(), "worker2": workers[1].tasks_done(),
                     "variants done": doc["progress"]["done"]}
        doc = wait_for("the surviving worker to finish the job", finished, machines, timeout=240)
        took = time.monotonic() - t0
        print(f"job of {PHOTOS} photos x {len(TARGETS)} targets: {took:.1f} s; at the kill: {killed_at}; "
              f"worker2 ran {workers[1].tasks_done()} tasks in all")
        variants = [v for a in doc["assets"] for v in a["variants"]]
        assert doc["status"] == "done" and len(variants) == expected, doc["progress"]
        assert all(v["status"] == "done" for v in variants)
        assert workers[1].tasks_done() > killed_at["worker2"], "the survivor did nothing after the kill"
        keys = variant_keys(db, [v["id"] for v in variants])
        assert len(set(keys.values())) == expected
        assert set(blobs.keys("variants/")) == set(keys.values()), "a variant stored twice, or not at all"

        # --- what the web door made works for everyone -------------------------------------------
        for v in variants:
            signed = httpx.get(v["url"], timeout=30)  # S3's presigned link, made by the web door
            via_web = api.get(f"/variants/{v['id']}/download")
            assert signed.status_code == 200 and via_web.status_code == 200
            assert signed.content == via_web.content
            assert Image.open(io.BytesIO(signed.content)).size[0] > 0
        approved = api.post(f"/variants/{variants[0]['id']}/approve")
        assert approved.status_code == 200
        zipped = api.get(f"/jobs/{job_id}/approved.zip")
        assert zipped.status_code == 200 and zipped.content[:2] == b"PK"

        browser = httpx.Client(base_url=web.base, timeout=60)
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', browser.get("/login").text).group(1)
        signed_in = browser.post("/login", data={"username": "ops", "password": PASSWORD, "csrf_token": csrf})
        assert signed_in.status_code in (200, 303), signed_in.text[:500]
        page = browser.get(f"/jobs/{job_id}")
        assert page.status_code == 200 and job_id in page.text
        previews = sorted(set(re.findall(r'src="(/previews/[^"]+)"', page.text)))
        assert len(previews) == PHOTOS + expected, previews  # each photo and each variant
        for src in previews:
            shown = browser.get(src.replace("&amp;", "&"))
            assert shown.status_code == 200 and shown.headers["content-type"] == "image/jpeg", src
            Image.open(io.BytesIO(shown.content)).verify()
        web2.serve()  # a second web door, on its own data folder, takes the same session cookie
        other = httpx.Client(base_url=web2.base, cookies=browser.cookies, timeout=60)
        page2 = other.get(f"/jobs/{job_id}", follow_redirects=False)
        assert page2.status_code == 200 and job_id in page2.text, page2.headers.get("location")
        assert other.get(previews[-1].replace("&amp;", "&")).status_code == 200

        # --- the callback, signed by whichever worker finished the job ---------------------------
        def callback():
            return [(h, b) for h, b in receiver.callbacks if f'"{job_id}"'.encode() in b]

        [(headers, body)] = wait_for("the completion callback", callback, machines, timeout=60)
        signature = next(v for k, v in headers.items() if k.lower() == callbacks.HEADER.lower())
        assert callbacks.verify([SECRETS["PRODUCT_STUDIO_CALLBACK_SECRET"]], body, signature)

        # --- a mask saved through the web door is what the surviving worker renders with ---------
        asset = doc["assets"][0]
        before = {v["id"]: keys[v["id"]] for v in asset["variants"]}
        w, h = Image.open(io.BytesIO(api.get(f"/assets/{asset['id']}/mask").content)).size
        mask = np.zeros((h, w), np.uint8)
        mask[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 255  # a plain box: a cut-out no model makes
        png = io.BytesIO()
        Image.fromarray(mask).save(png, "PNG")
        saved = api.put(f"/assets/{asset['id']}/mask", content=png.getvalue(), headers={"Content-Type": "image/png"})
        assert saved.status_code == 202, saved.text
        assert sorted(saved.json()["variants_queued"]) == sorted(before)
        def rerendered() -> dict[str, str] | None:
            now = variant_keys(db, list(before))
            return now if finished() and all(now[i] not in (None, before[i]) for i in before) else None

        after = wait_for("the re-render after the mask", rerendered, machines, timeout=120)
        [asset] = [a for a in job()["assets"] if a["id"] == asset["id"]]
        assert asset["mask_version"] == 1 and all(v["status"] == "done" for v in asset["variants"])
        for v in asset["variants"]:
            assert api.get(f"/variants/{v['id']}/download").content == blobs.get(after[v["id"]])

        # --- nothing left on a local disk that another machine would need -------------------------
        for worker in workers:
            assert files_in(worker.data) == [], f"{worker.name} wrote into its data folder"
        assert set(files_in(web.data)) <= {"initial-admin-password"}, files_in(web.data)
        assert files_in(web2.data) == []
    finally:
        for m in machines:
            m.stop()


SHOW_SECRETS = ("import json\nfrom product_studio import runtime\n"
                "print(json.dumps({n: runtime.secret(n) for n in runtime.SECRET_NAMES}))")


def secrets_seen(data_dirs: list[Path], database_url: str | None = None) -> list[dict[str, str]]:
    """The signing secrets each of several processes, started at once, one per data folder, signs with."""
    env = clean_env(**({"PRODUCT_STUDIO_DATABASE_URL": database_url} if database_url else {}))
    procs = [subprocess.Popen([sys.executable, "-c", SHOW_SECRETS], env={**env, "PRODUCT_STUDIO_DATA_DIR": str(d)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for d in data_dirs]
    seen = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        seen.append(json.loads(out))
    return seen


def test_generated_secrets_are_one_per_installation_not_per_machine(tmp_path, shared_database):
    """With no secret configured, four processes on data folders of their own, sharing a database
    and starting at once, sign download links, callbacks and sessions with the same keys, and
    write none into their folders."""
    folders = [tmp_path / f"machine{i}" for i in range(4)]
    seen = secrets_seen(folders, shared_database)
    assert all(s == seen[0] for s in seen), seen
    assert len(set(seen[0].values())) == 3 and all(len(v) == 64 for v in seen[0].values())
    assert not [p for f in folders if f.exists() for p in f.iterdir()]


def test_a_secret_an_older_version_generated_into_the_data_folder_is_kept(tmp_path):
    """An installation from before (SQLite and secrets in data_dir) keeps its session secret, so its
    admins stay signed in; the ones it never made are generated, and the next start agrees."""
    data = tmp_path / "data"
    data.mkdir()
    (data / ".session-secret").write_text("made-by-an-older-version\n")
    [first] = secrets_seen([data])
    assert first["session"] == "made-by-an-older-version"
    assert secrets_seen([data]) == [first]


def test_a_fresh_process_opens_the_store_inside_a_transaction_at_once(tmp_path, monkeypatch):
    """On SQLite a transaction holds the write lock from its first statement: the generated secrets
    are read when the database is opened, so opening the store or signing a callback inside a
    transaction (a job's document, a callback) does not wait 30 s for a lock it holds itself."""
    from sqlalchemy import text

    from product_studio import config, runtime

    monkeypatch.setenv("PRODUCT_STUDIO_DATA_DIR", str(tmp_path / "data"))
    for name in [k for k in os.environ if k.startswith("PRODUCT_STUDIO_") and k != "PRODUCT_STUDIO_DATA_DIR"]:
        monkeypatch.delenv(name)
    config.get_settings.cache_clear()
    runtime.reset()
    try:
        with runtime.database().session() as s:
            s.execute(text("UPDATE generated_secrets SET name = name"))  # a writer: the lock is held
            started = time.monotonic()
            runtime.store().put("probe/x.txt", b"x")
            assert len(runtime.secret("callback")) == 64
            assert time.monotonic() - started < 5
    finally:
        runtime.reset()
        config.get_settings.cache_clear()


def test_a_database_that_refuses_the_secret_says_so_without_printing_it(tmp_path):
    """A read-only database cannot take the generated secret: `doctor` names the problem and the
    setting that avoids it, and never shows the secret (errors never quote row values)."""
    data = tmp_path / "data"
    env = clean_env(PRODUCT_STUDIO_DATA_DIR=str(data))
    made = subprocess.run([sys.executable, "-c", "from product_studio import runtime; runtime.database()"],
                          env={**env, "PRODUCT_STUDIO_SESSION_SECRET": "s", "PRODUCT_STUDIO_CALLBACK_SECRET": "c",
                               "PRODUCT_STUDIO_STORAGE_SECRET": "t"}, capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr  # migrated, with no generated secret in it
    (data / ".storage-secret").write_text("PLANTED-old-storage-secret-31f\n")
    env["PRODUCT_STUDIO_DATABASE_URL"] = f"sqlite:///file:{data / 'product-studio.db'}?mode=ro&uri=true"
    out = subprocess.run([str(EXE), "doctor"], env={**env, "COLUMNS": "400"}, capture_output=True, text=True,
                         timeout=120)  # wide: no detail wrapped
    text = out.stdout + out.stderr
    assert "PLANTED" not in text and "31f" not in text
    assert "generated signing secrets" in text and "PRODUCT_STUDIO_STORAGE_SECRET" in text, text[-2000:]


def test_web_doors_starting_at_once_make_one_first_admin(tmp_path, shared_database):
    """Three web doors on one fresh database, each on its own data folder, start at once: none
    crashes, one admin is made, and exactly one password file holds its password."""
    env = clean_env(PRODUCT_STUDIO_DATABASE_URL=shared_database)
    folders = [tmp_path / f"web{i}" for i in range(3)]
    procs = [subprocess.Popen([sys.executable, "-c", "from product_studio.cli import _first_admin; _first_admin()"],
                              env={**env, "PRODUCT_STUDIO_DATA_DIR": str(f)}, stderr=subprocess.PIPE, text=True)
             for f in folders]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    files = [f / "initial-admin-password" for f in folders if (f / "initial-admin-password").exists()]
    assert len(files) == 1, files
    from product_studio.auth import password_is

    db = Database(shared_database)
    try:
        with db.session() as s:
            assert password_is(s, "admin", files[0].read_text().strip())
    finally:
        db.dispose()


def test_a_first_admin_password_changed_elsewhere_leaves_no_stale_file(tmp_path):
    """`users password admin` run on another machine cannot remove the web door's password file;
    the web door's next start does, as the password in it no longer signs in."""
    env = clean_env(PRODUCT_STUDIO_DATABASE_URL=f"sqlite:///{tmp_path / 'shared.db'}")
    first_admin = [sys.executable, "-c", "from product_studio.cli import _first_admin; _first_admin()"]
    web = {**env, "PRODUCT_STUDIO_DATA_DIR": str(tmp_path / "web")}
    subprocess.run(first_admin, env=web, check=True, capture_output=True, timeout=120)
    password_file = tmp_path / "web" / "initial-admin-password"
    subprocess.run(first_admin, env=web, check=True, capture_output=True, timeout=120)
    assert password_file.exists()  # still the password: kept
    changed = subprocess.run([str(EXE), "users", "password", "admin", "--password-stdin"], input="a new password 123\n",
                             env={**env, "PRODUCT_STUDIO_DATA_DIR": str(tmp_path / "ops")}, capture_output=True,
                             text=True, timeout=120)
    assert changed.returncode == 0, changed.stderr
    assert password_file.exists()  # another machine's disk
    subprocess.run(first_admin, env=web, check=True, capture_output=True, timeout=120)
    assert not password_file.exists()
