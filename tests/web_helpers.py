"""Shared by the web tests: a fresh installation in a temp folder, sign-in, and running a job's
work units in this process (the same calls a worker makes)."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient

from product_studio import config, runtime
from product_studio.auth import add_user, create_key
from product_studio.jobs import units
from product_studio.models import Job

PASSWORD = "correct horse battery"


def fresh_app(monkeypatch, tmp_path: Path, **env: str):
    """create_app() on an empty data folder (SQLite, local blobs), with extra settings."""
    monkeypatch.setenv("PRODUCT_STUDIO_DATA_DIR", str(tmp_path / "data"))
    for name, value in env.items():
        monkeypatch.setenv(f"PRODUCT_STUDIO_{name.upper()}", value)
    config.get_settings.cache_clear()
    runtime.reset()
    from product_studio.web import pages
    from product_studio.web.app import create_app

    pages._status_cache.clear()  # noqa: SLF001
    with runtime.database().session() as s:
        add_user(s, "admin", PASSWORD)
        key = create_key(s, "tests").key
    return create_app(), key


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def sign_in(client: TestClient, username: str = "admin", password: str = PASSWORD):
    token = csrf_of(client.get("/login").text)
    return client.post("/login", data={"username": username, "password": password, "csrf_token": token},
                       follow_redirects=False)


def run_job(job_id: str) -> None:
    """Do a job's pending work here, as a worker would: cut-out, edges, then each variant."""
    with runtime.database().session() as s:
        asset_ids = [a.id for a in s.get_one(Job, job_id).assets]
    for asset_id in asset_ids:
        units.run_cutout(asset_id)
        for step in units.run_edges(asset_id):
            units.run_variant(step.id)
