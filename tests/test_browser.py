"""The admin pages as a store admin uses them, in real headless Chromium (Debian's, driven by
Playwright) against `product-studio serve` with its worker on the embedded defaults:
sign in, upload two photos, wait for the variants, approve one, download the zip; and fix a bad
cut-out with touch-up strokes, with a mouse and with a finger.

Screenshots of the gallery (desktop and phone width) and of touch-up are saved in test-output/
(or $PRODUCT_STUDIO_TEST_OUTPUT)."""

from __future__ import annotations

import io
import os
import shutil
import time
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


def neighbour_photo() -> tuple[np.ndarray, np.ndarray]:
    """(800x600 RGB photo, its true product mask): a horse-shaped product (scikit-image's horse
    silhouette, filled with its coffee photo) beside a neighbour's product (a box of its rocket
    photo), over its astronaut photo out of focus. The models keep the neighbour and the
    astronaut's head too: the cut-out an admin has to fix."""
    import cv2
    from skimage import data

    h, w = 600, 800
    photo = cv2.GaussianBlur(cv2.resize(data.astronaut()[..., :3], (w, h)), (0, 0), 6)
    truth = np.zeros((h, w), bool)
    truth[150:478, 120:520] = cv2.resize((~data.horse()).astype(np.uint8), (400, 328),
                                         interpolation=cv2.INTER_NEAREST).astype(bool)
    neighbour = np.zeros((h, w), bool)
    neighbour[200:520, 560:740] = True
    photo[neighbour] = cv2.resize(data.rocket(), (w, h))[neighbour]
    photo[truth] = cv2.resize(data.coffee(), (w, h))[truth]
    return photo, truth


# Remove strokes (photo px, radius 24) an admin paints on neighbour_photo(): one down the neighbour's
# box, one back and forth over the astronaut's head; none touches the horse.
BROWSER_STROKES = ([(650, 230), (650, 500)],
                   [(290, 75), (430, 85), (290, 120), (420, 125), (290, 160), (370, 165), (300, 195)])


def iou(mask_png: bytes, truth: np.ndarray) -> float:
    kept = np.asarray(Image.open(io.BytesIO(mask_png)).convert("L")) >= 128
    return float((kept & truth).sum() / (kept | truth).sum())


def test_touch_up_fixes_the_cutout_and_the_variants_follow(server, browser, tmp_path):  # noqa: F811
    import httpx

    from tests.test_serve import api_key, jpeg

    base = server.replace("127.0.0.1", "localhost")
    auth = api_key(tmp_path)
    rgb, truth = neighbour_photo()
    r = httpx.post(f"{server}/api/v1/jobs", headers=auth, data={"targets": ["shopify-square", "ebay"]},
                   files=[("files", ("horse.jpg", jpeg(rgb), "image/jpeg"))])
    job_id = r.json()["id"]
    deadline = time.time() + 240
    while (doc := httpx.get(f"{server}/api/v1/jobs/{job_id}", headers=auth).json())["status"] != "done":
        assert time.time() < deadline, doc
        time.sleep(1)
    asset_id = doc["assets"][0]["id"]
    before = {v["id"]: v for v in doc["assets"][0]["variants"]}
    iou_before = iou(httpx.get(f"{server}/api/v1/assets/{asset_id}/mask", headers=auth).content, truth)

    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    sign_in_page(page, base, tmp_path)
    page.goto(f"{base}/jobs/{job_id}")
    page.click(f"#a-{asset_id} .fix-cutout")
    page.wait_for_selector("#touchup[data-state=ready]", timeout=30_000)

    # Two remove strokes, as an admin paints them: one down the neighbour's box, one back and
    # forth over the head, never touching the product.
    canvas = page.locator("#view").bounding_box()

    def to_screen(x: float, y: float) -> tuple[float, float]:
        return canvas["x"] + x * canvas["width"] / 800, canvas["y"] + y * canvas["height"] / 600

    page.click("button[data-tool=remove]")
    page.fill("#brush", "24")  # canvas px; the canvas shows the 800 px photo 1:1
    for n, stroke in enumerate(BROWSER_STROKES, start=1):
        page.mouse.move(*to_screen(*stroke[0]))
        page.mouse.down()
        for point in stroke[1:]:
            page.mouse.move(*to_screen(*point), steps=8)
        page.mouse.up()
        page.wait_for_selector(f"#touchup[data-previews='{n}']", state="attached", timeout=30_000)
    assert "Refined in" in page.locator("#touchup-status").inner_text()
    page.screenshot(path=str(OUTPUT / "touch-up.png"), full_page=True)

    page.click("#save")
    page.wait_for_url(f"{base}/jobs/{job_id}#a-{asset_id}")
    page.wait_for_selector("#panel[data-final='1']", state="attached", timeout=240_000)
    assert page.locator(f"#a-{asset_id} .badge", has_text="your mask v1").count() == 1
    page.wait_for_load_state("networkidle")
    page.screenshot(path=str(OUTPUT / "touch-up-saved.png"), full_page=True)

    after = httpx.get(f"{server}/api/v1/jobs/{job_id}", headers=auth).json()["assets"][0]
    iou_after = iou(httpx.get(f"{server}/api/v1/assets/{asset_id}/mask", headers=auth).content, truth)
    print(f"touch-up IoU {iou_before:.3f} -> {iou_after:.3f}")
    assert iou_after >= iou_before + 0.4 and iou_after >= 0.9
    assert after["mask_version"] == 1
    for v in after["variants"]:  # rendered again from the new mask: new files, checked again
        old = before[v["id"]]
        assert v["status"] == "done" and v["check"] is not None
        assert v["url"].split("?")[0] != old["url"].split("?")[0]
        new_file, old_file = (httpx.get(u if u.startswith("http") else server + u) for u in (v["url"], old["url"]))
        assert new_file.status_code == old_file.status_code == 200 and new_file.content != old_file.content

    # A finger on a phone paints too (a tap is a dot stroke) and gets its preview.
    phone = browser.new_context(viewport={"width": 390, "height": 844}, has_touch=True, is_mobile=True,
                                storage_state=page.context.storage_state()).new_page()
    phone.goto(f"{base}/assets/{asset_id}/touch-up")
    phone.wait_for_selector("#touchup[data-state=ready]", timeout=30_000)
    box = phone.locator("#view").bounding_box()
    phone.touchscreen.tap(box["x"] + box["width"] * 0.2, box["y"] + box["height"] * 0.1)
    phone.wait_for_selector("#touchup[data-previews='1']", state="attached", timeout=30_000)
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    assert errors == []


def sign_in_page(page, base: str, tmp_path: Path) -> None:
    password = (server_data(tmp_path) / "initial-admin-password").read_text().strip()
    page.goto(f"{base}/login")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")


def server_data(tmp_path: Path) -> Path:
    return tmp_path / "data"
