"""Publishing in-process, against the Shopify stand-in: the gallery's Publish buttons and states,
approving on an on-approve store, replace-main (reorder, the old main detached), a re-render
replacing its earlier image only when asked, and the marks intake recognises. The publication
unit is run here as a worker runs it (publish.service.run_publication)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from standins.shopify import ShopifyStandIn
from webhook_stack import photo

from product_studio import runtime
from product_studio.jobs import Upload, submit
from product_studio.models import Publication, Variant
from product_studio.publish import marks
from product_studio.publish.recognise import ours
from product_studio.publish.records import link_job
from product_studio.publish.service import after_render, after_review, publish_variant, run_publication
from product_studio.webhooks.platforms import ImageRef
from tests.web_helpers import csrf_of, fresh_app, run_job, sign_in

STORE = """
[[store]]
name = "acme"
platform = "shopify"
source = "acme.myshopify.com"
secrets = ["acme-secret"]
targets = ["ebay", "google-shopping"]
api_url = "{api}"
api_token = "shpat_standin"
publish = "{publish}"
mode = "{mode}"
"""


@pytest.fixture
def shop():
    server = ShopifyStandIn(token="shpat_standin", ready_after=0.2)
    yield server
    server.stop()


def installation(monkeypatch, tmp_path, shop, mode: str = "append", publish: str = "on-approve"):
    stores_file = tmp_path / "stores.toml"
    stores_file.write_text(STORE.format(api=shop.base, mode=mode, publish=publish))
    app, key = fresh_app(monkeypatch, tmp_path, stores_file=str(stores_file))
    return app


def webhook_job(pid: int, targets: list[str]) -> str:
    """A job as webhook intake makes it (linked to its product), run here."""
    sub = submit([Upload("cup.jpg", photo(pid, size=160), title="Coffee cup")], targets=targets, origin="webhook:shopify",
                 store_name="acme")
    with runtime.database().session() as s:
        link_job(s, sub.job.id, "shopify", "acme", str(pid))
    run_job(sub.job.id)
    return sub.job.id


def variants(job_id: str) -> dict[str, Variant]:
    with runtime.database().session() as s:
        from product_studio.models import Asset

        return {v.target: v for v in s.scalars(select(Variant).join(Asset).where(Asset.job_id == job_id))}


def publications(job_id: str) -> list[Publication]:
    with runtime.database().session() as s:
        return list(s.scalars(select(Publication).where(Publication.job_id == job_id)
                              .order_by(Publication.created_at)))


def test_gallery_publish_button_states_and_on_approve(monkeypatch, tmp_path, shop):
    app = installation(monkeypatch, tmp_path, shop)
    shop.add_product(9001, "Coffee cup", images=[("front", photo(1))])
    job_id = webhook_job(9001, ["ebay", "google-shopping"])
    ebay, google = variants(job_id)["ebay"], variants(job_id)["google-shopping"]
    client = TestClient(app, base_url="https://testserver")
    sign_in(client)
    page = client.get(f"/jobs/{job_id}").text
    assert f'action="/variants/{ebay.id}/publish"' in page and 'id="publish-approved"' in page

    # Approving on an on-approve store queues the publication; the unit publishes it.
    token = csrf_of(page)
    r = client.post(f"/variants/{ebay.id}/review", data={"action": "approve", "csrf_token": token},
                    follow_redirects=False)
    assert r.status_code == 303
    [pub] = publications(job_id)
    assert pub.status == "queued" and pub.variant_id == ebay.id
    run_publication(pub.id)
    run_publication(pub.id)  # a duplicated message: settled already, nothing happens
    assert sum(shop.attached[9001].values()) == 1
    page = client.get(f"/jobs/{job_id}").text
    assert 'href="https://acme.myshopify.com/admin/products/9001"' in page and "published to shopify" in page
    assert f'action="/variants/{ebay.id}/publish"' not in page  # published as it is: nothing to press

    # Publish on the other variant; the platform refuses it: the reason and a retry button show.
    shop.max_media[9001] = 2
    r = client.post(f"/variants/{google.id}/publish", data={"csrf_token": token}, follow_redirects=False)
    assert r.status_code == 303
    failed = [p for p in publications(job_id) if p.variant_id == google.id][0]
    with pytest.raises(Exception, match="Exceeded maximum number of media"):
        run_publication(failed.id)
    from product_studio.publish.service import fail_publication

    fail_publication(failed.id, "shopify productUpdate: media: Exceeded maximum number of media (2) for product")
    page = client.get(f"/jobs/{job_id}").text
    assert "publishing failed: shopify productUpdate" in page and "Retry publishing" in page
    # Without the CSRF token: refused.
    assert client.post(f"/variants/{google.id}/publish", data={}, follow_redirects=False).status_code == 403


def test_replace_main_reorders_and_detaches_and_rerenders_replace_only_when_asked(monkeypatch, tmp_path, shop):
    installation(monkeypatch, tmp_path, shop, mode="replace-main")
    shop.add_product(9002, "Coffee cup", images=[("old main", photo(3)), ("side", photo(4))])
    job_id = webhook_job(9002, ["ebay", "google-shopping"])
    main = variants(job_id)["ebay"]  # the store's first target, the first photo: the main image
    [pid] = publish_variant(main.id).queued
    run_publication(pid)
    alts = [m.alt for m in shop.products[9002].media]
    assert alts[0].startswith("Coffee cup [ps-") and alts[1:] == ["side"]  # first; the old main detached
    first = publications(job_id)[0]
    assert first.role == "main" and first.status == "published"

    # The photo's mask is fixed: its variants render again. Nothing is republished on its own...
    import numpy as np

    from product_studio.jobs.masks import save_mask

    with runtime.database().session() as s:
        from product_studio.models import Asset

        asset = s.get_one(Asset, main.asset_id)
        alpha = np.zeros((asset.height, asset.width), np.uint8)
    alpha[10:-10, 20:-20] = 255
    save_mask(main.asset_id, alpha, "upload")
    run_job(job_id)
    assert variants(job_id)["ebay"].key != main.key
    assert publications(job_id)[0].status == "published" and sum(shop.attached[9002].values()) == 1
    # ...until the admin asks: the new render replaces the old image, still first.
    assert publish_variant(main.id).queued == [pid]
    run_publication(pid)
    alts = [m.alt for m in shop.products[9002].media]
    assert len(alts) == 2 and alts[1] == "side" and first.mark not in alts[0] and marks.variant_ids(alts[0]) == {main.id}
    assert sum(shop.attached[9002].values()) == 2


def test_intake_recognises_recorded_ids_and_marks(monkeypatch, tmp_path, shop):
    installation(monkeypatch, tmp_path, shop)
    shop.add_product(9003, "Coffee cup", images=[("front", photo(5))])
    job_id = webhook_job(9003, ["ebay"])
    ebay = variants(job_id)["ebay"]
    [pid] = publish_variant(ebay.id).queued
    run_publication(pid)
    [ours_on_shop] = [m for m in shop.products[9003].media if m.alt != "front"]
    mark = marks.variant_ids(ours_on_shop.alt)
    images = [ImageRef("a", "https://cdn/x/front.jpg", "1", "front"),
              ImageRef("b", "https://cdn/x/other.jpg", str(ours_on_shop.id), "edited by the admin"),  # id only
              ImageRef("c", f"https://cdn/x/cup-ebay-ps-{ebay.id}-0000abcd.jpg", "999", None),  # mark in the URL
              ImageRef("d", "https://cdn/x/y.jpg", None, f"A cup [ps-{'f' * 32}-12345678]")]  # mark in the alt
    with runtime.database().session() as s:
        assert ours(s, "shopify", "acme", "9003", images) == {"b", "c", "d"}
    assert mark == {ebay.id}


def test_auto_publishes_what_passed_once_and_never_a_photo_marked_for_review(monkeypatch, tmp_path, shop):
    installation(monkeypatch, tmp_path, shop, publish="auto")
    shop.add_product(9004, "Coffee cup", images=[("front", photo(6))])
    job_id = webhook_job(9004, ["ebay", "google-shopping"])
    ebay, google = variants(job_id)["ebay"], variants(job_id)["google-shopping"]
    assert after_review(ebay.id, True) == []  # an auto store does not wait for approvals
    [step] = after_render(ebay.id)
    assert step.stage == "publish" and after_render(ebay.id) == []  # recorded once
    run_publication(step.id)
    assert sum(shop.attached[9004].values()) == 1
    with runtime.database().session() as s:
        from product_studio.models import Asset

        s.get_one(Asset, google.asset_id).review_reason = "the models disagree about the edges"
    assert after_render(google.id) == []  # its photo needs review: an admin decides
