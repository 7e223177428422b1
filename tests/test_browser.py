"""The admin pages as a store admin uses them, in real headless Chromium (Debian's, driven by
Playwright) against `product-studio serve` with its worker on the embedded defaults:
sign in, upload two photos, wait for the variants, approve one, download the zip.

Screenshots of the gallery (desktop and phone width) are saved in test-output/ (or
$PRODUCT_STUDIO_TEST_OUTPUT)."""

from __future__ import annotations

import io
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.test_serve import server  # noqa: F401 (the fixture: serve + worker on a fresh data folder)

CI = os.environ.get("CI") == "true"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
OUTPUT = Path(os.environ.get("PRODUCT_STUDIO_TEST_OUTPUT", Path(__file__).parent.parent / "test-output"))


@pytest.fixture
def browser():
    if not shutil.which(CHROMIUM):
        if CI:
            pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield b
        b.close()


def test_sign_in_upload_review_and_download(server, browser, tmp_path, coffee_rgb, photo_bytes):  # noqa: F811
    base = server.replace("127.0.0.1", "localhost")  # a secure context: the Secure session cookie is kept
    password = (Path(server_data(tmp_path)) / "initial-admin-password").read_text().strip()
    photos = []
    for name, rgb in (("coffee-cup.jpg", coffee_rgb), ("coffee-cup-left.jpg", coffee_rgb[:, ::-1])):
        path = tmp_path / name
        path.write_bytes(photo_bytes(np.ascontiguousarray(rgb), "JPEG"))
        photos.append(str(path))
    OUTPUT.mkdir(parents=True, exist_ok=True)

    page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("dialog", lambda d: errors.append(f"dialog: {d.message}"))

    # 1. sign in (the first start made `admin` with a password in a 0600 file)
    page.goto(f"{base}/jobs")
    assert "/login" in page.url
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/jobs")

    # 2. upload two photos for two targets
    page.click("text=Upload")
    page.set_input_files("#files", photos)
    assert page.locator("#file-list li").count() == 2
    for box in page.locator("input[name=targets]").all():
        box.set_checked(box.get_attribute("value") in ("ebay", "lifestyle"))
    page.fill("input[name=title]", "Coffee cup")
    page.fill("input[name=category]", "Kitchen")
    page.click("#submit")
    page.wait_for_url(f"{base}/jobs/*")

    # 3. the panel refreshes itself until every variant is there
    page.wait_for_selector("#panel[data-final='1']", state="attached", timeout=240_000)
    assert page.locator("#job-status").inner_text() == "done"
    assert page.locator("figure.variant[data-status=done]").count() == 4
    assert page.locator("figure.variant .badge.pass", has_text="check: pass").count() == 4
    page.wait_for_load_state("networkidle")

    # 4. approve one
    page.locator("figure.variant button[value=approve]").first.click()
    page.wait_for_load_state("networkidle")
    assert page.locator("figure.variant.approved").count() == 1
    page.screenshot(path=str(OUTPUT / "gallery.png"), full_page=True)

    # 5. the zip of approved variants holds exactly that one image
    with page.expect_download() as info:
        page.click("#zip")
    archive = tmp_path / "approved.zip"
    info.value.save_as(archive)
    with zipfile.ZipFile(archive) as zf:
        names = zf.namelist()
        assert len(names) == 1 and names[0].startswith("001-coffee-cup/")
        image = Image.open(io.BytesIO(zf.read(names[0])))
        assert image.format == "JPEG" and image.size in ((1600, 1600), (1080, 1350))

    # The same gallery on a phone-width screen: no sideways scrolling.
    phone = browser.new_page(viewport={"width": 390, "height": 844}, storage_state=page.context.storage_state())
    phone.goto(page.url.split("#")[0])
    phone.wait_for_load_state("networkidle")
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    phone.screenshot(path=str(OUTPUT / "gallery-phone.png"), full_page=False)
    assert errors == []


def server_data(tmp_path: Path) -> Path:
    return tmp_path / "data"
