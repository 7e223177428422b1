"""The touch-up page: an admin paints keep/remove strokes (or drags a box) over a photo with its
current mask, sees the refined mask at once, saves it as a new mask version, and every variant of
the photo renders again from it (jobs/masks.py). Earlier versions can be restored.

Painting needs JavaScript (templates/static/touchup.js); the page says so when scripts are off,
and restoring a version is a plain form. The photo and masks are sent at DISPLAY_SIDE px (long
side): strokes come back in the photo's own pixels, and the refinement runs at full size.
"""

from __future__ import annotations

import json
import time
from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from .. import runtime
from ..errors import BadInput
from ..models import STAGE_FINAL, Asset, StageStatus
from .pages import back, page, validation_problems
from .schemas import MaskStrokes
from .security import check_csrf, current_user

User = Annotated[str, Depends(current_user)]
router = APIRouter(include_in_schema=False)

DISPLAY_SIDE = 1024  # px: sharp on a laptop screen, light enough to send on every stroke
MAX_EDIT_BYTES = 4 * 1024 * 1024  # the most points an edit may hold (20,000) fit in well under 1 MiB


def _display_size(width: int, height: int) -> tuple[int, int]:
    scale = min(1.0, DISPLAY_SIDE / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _json(text: str | bytes) -> object:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        raise BadInput("the strokes must be JSON: {\"strokes\": [...], \"box\": [...]}") from None


def _edit(doc: object):
    """A touch-up edit from the page's JSON, validated like the API's (schemas.MaskStrokes)."""
    from ..pipeline.touchup import Edit

    try:
        body = MaskStrokes.model_validate(doc)
    except ValidationError as exc:
        raise BadInput(f"the strokes are not valid: {validation_problems(exc.errors())}") from None
    return Edit.from_json(body.model_dump(mode="json"))


def _png(alpha, size: tuple[int, int] | None = None) -> bytes:
    import cv2

    from ..jobs.masks import encode_mask

    if size is not None and size != (alpha.shape[1], alpha.shape[0]):
        alpha = cv2.resize(alpha, size, interpolation=cv2.INTER_AREA)
    return encode_mask(alpha)


@router.get("/assets/{asset_id}/touch-up")
def touch_up_page(request: Request, user: User, asset_id: str) -> HTMLResponse:
    from ..jobs.masks import versions

    with runtime.database().session() as s:
        asset = s.get(Asset, asset_id)
        if asset is None:
            raise HTTPException(404, f"no photo {asset_id}")
        history = versions(s, asset.job.store, asset.sha256)
        busy = sum(v.status not in STAGE_FINAL for v in asset.variants)
        if asset.cutout_status in (StageStatus.PENDING, StageStatus.RUNNING):
            blocked = "This photo is still being cut out: wait until it is done."
        elif busy:
            blocked = f"{busy} variant(s) of this photo are still rendering: wait until they are finished."
        else:
            blocked = None
        return page(request, "touchup.html", asset=asset, job_id=asset.job_id, history=history, blocked=blocked,
                    display=_display_size(asset.width, asset.height))


@router.get("/assets/{asset_id}/photo.jpg")
def photo(user: User, asset_id: str) -> Response:
    """The photo at DISPLAY_SIDE px, for the touch-up canvas (content-addressed: cacheable)."""
    from .media import preview

    with runtime.database().session() as s:
        asset = s.get(Asset, asset_id)
        if asset is None:
            raise HTTPException(404, f"no photo {asset_id}")
        key = asset.source_key
    return Response(preview(key, DISPLAY_SIDE), media_type="image/jpeg",
                    headers={"Cache-Control": "private, max-age=86400"})


@router.get("/assets/{asset_id}/mask.png")
def mask_png(user: User, asset_id: str) -> Response:
    """The photo's current mask at the touch-up canvas's size (greyscale, 255 keeps)."""
    from ..jobs.masks import current_mask

    alpha = current_mask(asset_id)
    return Response(_png(alpha, _display_size(alpha.shape[1], alpha.shape[0])), media_type="image/png",
                    headers={"Cache-Control": "no-store"})


@router.post("/assets/{asset_id}/mask/preview")
async def preview_mask(request: Request, user: User, asset_id: str) -> Response:
    """The mask refined by the strokes in the JSON body (schemas.MaskStrokes), not saved: a PNG at
    the canvas's size. The CSRF token comes in the X-CSRF-Token header."""
    from ..jobs.masks import refine_for

    check_csrf(request, request.headers.get("x-csrf-token"))
    body = await request.body()
    if len(body) > MAX_EDIT_BYTES:
        raise BadInput(f"the strokes are over {MAX_EDIT_BYTES // (1024 * 1024)} MiB: paint fewer or shorter strokes")
    doc = _json(body)
    edit = _edit(doc)

    def refine() -> tuple[bytes, float]:
        t0 = time.perf_counter()
        alpha = refine_for(asset_id, edit)
        seconds = time.perf_counter() - t0
        return _png(alpha, _display_size(alpha.shape[1], alpha.shape[0])), seconds

    data, seconds = await run_in_threadpool(refine)
    return Response(data, media_type="image/png",
                    headers={"Cache-Control": "no-store", "X-Refine-Seconds": f"{seconds:.3f}"})


@router.post("/assets/{asset_id}/mask")
def save(request: Request, user: User, asset_id: str, edit: Annotated[str, Form()] = "",
         csrf_token: Annotated[str, Form()] = "") -> Response:
    """Save the strokes' mask as the photo's new version and render its variants again."""
    from ..jobs.masks import refine_for
    from .dispatch import save_mask

    check_csrf(request, csrf_token)
    if not edit.strip():
        raise BadInput("no strokes were sent: paint on the photo first")
    if len(edit) > MAX_EDIT_BYTES:
        raise BadInput(f"the strokes are over {MAX_EDIT_BYTES // (1024 * 1024)} MiB: paint fewer or shorter strokes")
    saved = save_mask(asset_id, refine_for(asset_id, _edit(_json(edit))), "strokes")
    return back(f"{_job_url(asset_id)}#a-{saved.asset_id}")


@router.post("/assets/{asset_id}/mask/restore")
def restore(request: Request, user: User, asset_id: str, version: Annotated[str, Form()] = "",
            csrf_token: Annotated[str, Form()] = "") -> Response:
    """Use an earlier mask version again (0: the models' cut-out) and render the variants again."""
    from .dispatch import restore_mask

    check_csrf(request, csrf_token)
    if not version.isascii() or not version.isdigit() or len(version) > 9:
        raise BadInput("choose a mask version to restore")
    restore_mask(asset_id, int(version))
    return back(f"{_job_url(asset_id)}#a-{asset_id}")


def _job_url(asset_id: str) -> str:
    with runtime.database().session() as s:
        asset = s.get(Asset, asset_id)
        if asset is None:
            raise HTTPException(404, f"no photo {asset_id}")
        return f"/jobs/{asset.job_id}"
