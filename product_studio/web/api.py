"""The JSON API under /api/v1, for machines with an API key. Thin: each route validates,
calls the core (jobs, db) and shapes the answer.

The image core (jobs, media: NumPy, OpenCV, the pipeline) is imported where it is used, so the
web process starts without it; app.py warms it in the background right after start."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response, StreamingResponse

from .. import content_types, runtime
from ..config import get_settings
from ..db import list_jobs, review_variant
from ..models import Asset, Job, Variant
from .schemas import (
    Error,
    JobCreated,
    JobFromUrls,
    JobOut,
    JobSummary,
    MaskOut,
    MaskRestore,
    MaskStrokes,
    Published,
    PublishJob,
    Regenerate,
    VariantOut,
)
from .security import require_api_key

_ERRORS = {401: {"model": Error}, 404: {"model": Error}, 409: {"model": Error}, 413: {"model": Error},
           422: {"model": Error}}
router = APIRouter(prefix="/api/v1", tags=["api"], dependencies=[Depends(require_api_key)], responses=_ERRORS)


def _job(job_id: str) -> dict:
    from ..jobs.documents import job_document

    settings = get_settings()
    with runtime.database().session() as s:
        job = s.get(Job, job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id}")
        return job_document(job, settings)


def _variant_out(variant_id: str) -> dict:
    from ..jobs.documents import variant_document

    with runtime.database().session() as s:
        v = s.get(Variant, variant_id)
        if v is None:
            raise HTTPException(404, f"no variant {variant_id}")
        return variant_document(v, get_settings())


@router.post("/jobs", status_code=202, response_model=JobCreated, summary="Create a job from uploaded photos")
async def create_job(files: list[UploadFile], targets: Annotated[list[str], Form()],
                     scene: Annotated[str | None, Form()] = None, seed: Annotated[int, Form(ge=0, lt=2**32)] = 0,
                     title: Annotated[str | None, Form(max_length=500)] = None,
                     category: Annotated[str | None, Form(max_length=500)] = None,
                     callback_url: Annotated[str | None, Form()] = None) -> dict:
    from .dispatch import submit_job
    from .media import read_uploads

    settings = get_settings()
    uploads = await read_uploads(files, settings, title=title, category=category)
    sub = await run_in_threadpool(submit_job, uploads, targets=targets, scene=scene, seed=seed,
                                  origin="api", callback_url=callback_url or None, settings=settings)
    return {"id": sub.job.id, "created": sub.created, "status": sub.job.status}


@router.post("/jobs/from-urls", status_code=202, response_model=JobCreated,
             summary="Create a job from image URLs (fetched safely: public addresses only)")
def create_job_from_urls(body: JobFromUrls) -> dict:
    """Recorded and answered at once; each photo's cut-out task fetches its URL (a URL that cannot be
    fetched fails its photo, the reason in the job document's variants)."""
    from .dispatch import submit_urls_job

    settings = get_settings()
    sub = submit_urls_job([str(u) for u in body.image_urls], targets=body.targets, scene=body.scene, seed=body.seed,
                          title=body.title, category=body.category, origin="api",
                          callback_url=str(body.callback_url) if body.callback_url else None, settings=settings)
    return {"id": sub.job.id, "created": sub.created, "status": sub.job.status}


@router.get("/jobs", response_model=list[JobSummary], summary="List jobs, newest first")
def get_jobs(limit: Annotated[int, Query(ge=1, le=200)] = 50, offset: Annotated[int, Query(ge=0, le=10**9)] = 0) -> list[dict]:
    with runtime.database().session() as s:
        return [{"id": j.id, "status": j.status, "origin": j.origin, "created_at": j.created_at.isoformat(),
                 "photos": len(j.assets), "progress": counts} for j, counts in list_jobs(s, limit=limit, offset=offset)]


@router.get("/jobs/{job_id}", response_model=JobOut, summary="A job, its photos and their variants")
def get_job(job_id: str) -> dict:
    return _job(job_id)


@router.get("/jobs/{job_id}/variants", response_model=list[VariantOut], summary="A job's variants")
def get_variants(job_id: str) -> list[dict]:
    return [v for a in _job(job_id)["assets"] for v in a["variants"]]


def _review(variant_id: str, approved: bool | None) -> dict:
    from .dispatch import reviewed

    with runtime.database().session() as s:
        if s.get(Variant, variant_id) is None:
            raise HTTPException(404, f"no variant {variant_id}")
        review_variant(s, variant_id, approved)
    reviewed(variant_id, approved)  # on-approve stores: approving publishes
    return _variant_out(variant_id)


@router.post("/variants/{variant_id}/approve", response_model=VariantOut, summary="Approve a finished variant")
def approve(variant_id: str) -> dict:
    return _review(variant_id, True)


@router.post("/variants/{variant_id}/reject", response_model=VariantOut, summary="Reject a finished variant")
def reject(variant_id: str) -> dict:
    return _review(variant_id, False)


@router.post("/variants/{variant_id}/regenerate", status_code=202, response_model=VariantOut,
             summary="Render a finished variant again with a new seed or another scene")
def regenerate(variant_id: str, body: Regenerate | None = None) -> dict:
    from .dispatch import regenerate_variant

    body = body or Regenerate()
    with runtime.database().session() as s:
        if s.get(Variant, variant_id) is None:
            raise HTTPException(404, f"no variant {variant_id}")
    variant = regenerate_variant(variant_id, seed=body.seed, scene=body.scene)
    return _variant_out(variant.id)


@router.post("/variants/{variant_id}/publish", status_code=202, response_model=Published,
             summary="Publish a finished variant to the store product its photo came from (again, to retry a "
                     "failed one or to replace the image with a new render)")
def publish_variant(variant_id: str) -> dict:
    from .dispatch import publish_variant as publish

    requested = publish(variant_id)
    return {"queued": requested.queued, "publications": _variant_out(variant_id)["publications"]}


@router.post("/jobs/{job_id}/publish", status_code=202, response_model=Published,
             summary="Publish a job's approved variants (or every finished one that passed its check) to the "
                     "store product its photos came from")
def publish_job(job_id: str, body: PublishJob | None = None) -> dict:
    from .dispatch import publish_job as publish

    body = body or PublishJob()
    requested = publish(job_id, approved_only=body.approved_only)
    return {"queued": requested.queued,
            "publications": [p for a in _job(job_id)["assets"] for v in a["variants"] for p in v["publications"]]}


@router.get("/variants/{variant_id}/download", summary="The variant's file",
            responses={200: {"content": {ctype: {} for ctype in content_types.BY_EXTENSION.values()}}})
def download(variant_id: str) -> Response:
    from .media import variant_download

    return variant_download(variant_id)


@router.get("/jobs/{job_id}/approved.zip", summary="A zip of the job's approved variants",
            responses={200: {"content": {"application/zip": {}}}, 409: {"description": "nothing approved yet"}})
def download_approved(job_id: str) -> Response:
    from .media import NO_APPROVED, approved_zip

    _job(job_id)
    chunks, count = approved_zip(job_id)
    if not count:  # an empty zip would look like a download that worked
        raise HTTPException(409, NO_APPROVED)
    return StreamingResponse(chunks, media_type="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="{job_id}-approved.zip"'})


# --- touch-up: the photo's mask -------------------------------------------------------------------

def _asset(asset_id: str) -> None:
    with runtime.database().session() as s:
        if s.get(Asset, asset_id) is None:
            raise HTTPException(404, f"no photo {asset_id}")


def _mask_out(saved) -> dict:
    return {"asset_id": saved.asset_id, "version": saved.version, "origin": saved.origin,
            "variants_queued": saved.variant_ids}


@router.get("/assets/{asset_id}/mask", summary="The photo's current mask: a greyscale PNG of its size, 255 keeps",
            responses={200: {"content": {"image/png": {}}}})
def get_mask(asset_id: str) -> Response:
    from ..jobs.masks import current_mask, encode_mask

    _asset(asset_id)
    return Response(encode_mask(current_mask(asset_id)), media_type="image/png")


_PNG_BODY = {"requestBody": {"required": True, "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}}}


@router.put("/assets/{asset_id}/mask", status_code=202, response_model=MaskOut, openapi_extra=_PNG_BODY,
            summary="Use your own mask for the photo (a PNG of its size: white or opaque keeps) and re-render "
                    "its variants from it")
async def put_mask(asset_id: str, request: Request) -> dict:
    from ..jobs.masks import decode_mask
    from .dispatch import save_mask

    data = await request.body()  # bounded by the app's body limit

    def save() -> dict:
        with runtime.database().session() as s:
            asset = s.get(Asset, asset_id)
            if asset is None:
                raise HTTPException(404, f"no photo {asset_id}")
            width, height = asset.width, asset.height
        return _mask_out(save_mask(asset_id, decode_mask(data, width, height), "upload"))

    return await run_in_threadpool(save)


@router.post("/assets/{asset_id}/mask/strokes", status_code=202, response_model=MaskOut,
             summary="Touch up the photo's mask with keep/remove strokes and/or a box, and re-render its variants")
def post_strokes(asset_id: str, body: MaskStrokes) -> dict:
    from ..jobs.masks import refine_for
    from ..pipeline.touchup import Edit
    from .dispatch import save_mask

    _asset(asset_id)
    edit = Edit.from_json(body.model_dump(mode="json"))
    return _mask_out(save_mask(asset_id, refine_for(asset_id, edit), "strokes"))


@router.post("/assets/{asset_id}/mask/restore", status_code=202, response_model=MaskOut,
             summary="Use an earlier mask version again (0: the models' own cut-out) and re-render")
def post_restore(asset_id: str, body: MaskRestore) -> dict:
    from .dispatch import restore_mask

    _asset(asset_id)
    return _mask_out(restore_mask(asset_id, body.version))
