"""The gallery's publishing: "Publish" on a variant, "Publish approved" on a job, and what the job
page shows of each publication (queued, published with a link to the product in the store's admin,
failed with the reason and a button to retry). Pages only; the API's routes are in api.py."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from .. import runtime
from ..config import get_settings
from ..models import Variant
from .security import check_csrf, current_user

User = Annotated[str, Depends(current_user)]
router = APIRouter(include_in_schema=False)


def publish_view(session, job_id: str) -> dict:
    """The job page's publishing context: `publications` (variant id -> its publications) and
    `publish_to` (the store products the job goes back to, in stores that publish; empty: no
    Publish buttons)."""
    from ..publish.records import of_job, products_of
    from ..webhooks.stores import stores

    configured = stores(get_settings())
    targets = []
    for link in products_of(session, job_id):
        store = configured.named(link.platform, link.store)
        if store is not None and store.publish != "off":
            targets.append(link)
    return {"publications": of_job(session, job_id), "publish_to": targets}


def _back(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


@router.post("/variants/{variant_id}/publish")
def publish_variant(request: Request, user: User, variant_id: str, csrf_token: Annotated[str, Form()] = "") -> Response:
    check_csrf(request, csrf_token)
    from .dispatch import publish_variant as publish

    with runtime.database().session() as s:
        v = s.get(Variant, variant_id)
        if v is None:
            raise HTTPException(404, f"no variant {variant_id}")
        job_id = v.asset.job_id
    publish(variant_id)
    return _back(f"/jobs/{job_id}#v-{variant_id}")


@router.post("/jobs/{job_id}/publish")
def publish_job(request: Request, user: User, job_id: str, csrf_token: Annotated[str, Form()] = "") -> Response:
    check_csrf(request, csrf_token)
    from .dispatch import publish_job as publish

    publish(job_id, approved_only=True)
    return _back(f"/jobs/{job_id}")
