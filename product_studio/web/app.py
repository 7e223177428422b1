"""FastAPI app: record jobs and hand them to the workers; serve signed downloads.

An upload returns as soon as the job is recorded; the work happens in the workers.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Form, HTTPException, Query, UploadFile
from fastapi.responses import JSONResponse, Response

from .. import runtime, work
from ..config import get_settings
from ..errors import ProductStudioError
from ..models import Job
from ..storage import NotFound


def create_app(on_shutdown: Callable[[], None] | None = None) -> FastAPI:
    """`on_shutdown` runs when the server stops (uvicorn re-raises SIGTERM afterwards, so a
    caller's `finally` would never run)."""
    settings = get_settings()

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        if on_shutdown is not None:
            on_shutdown()

    app = FastAPI(title="Product Studio", version="0.1.0", lifespan=lifespan)

    @app.exception_handler(ProductStudioError)
    async def _error(_, exc: ProductStudioError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=exc.http_status)

    from .webhooks import router as webhooks_router

    app.include_router(webhooks_router)

    @app.get("/healthz")
    def healthz() -> dict:
        return {"ok": True}

    @app.post("/api/v1/jobs", status_code=202)
    async def create_job(files: list[UploadFile], targets: list[str] = Form(...), scene: str | None = Form(None),
                         seed: int = Form(0), callback_url: str | None = Form(None)) -> dict:
        uploads = []
        for f in files:
            data = await f.read(settings.max_input_bytes + 1)
            uploads.append(work.Upload(f.filename or "upload", data))
        job, created = work.submit(uploads, targets=targets, scene=scene, seed=seed, origin="api",
                                   callback_url=callback_url, settings=settings)
        return {"id": job.id, "created": created, "status": job.status}

    @app.get("/api/v1/jobs/{job_id}")
    def get_job(job_id: str) -> dict:
        with runtime.database(settings).session() as s:
            job = s.get(Job, job_id)
            if job is None:
                raise HTTPException(404, f"no job {job_id}")
            return work.job_document(job, settings)

    @app.get("/files/{key:path}")
    def download(key: str, expires: int = Query(...), sig: str = Query(...)) -> Response:
        blobs = runtime.store(settings)
        if not hasattr(blobs, "verify") or not blobs.verify(key, expires, sig):
            raise HTTPException(403, "link expired or invalid")
        try:
            data = blobs.get(key)
        except NotFound:
            raise HTTPException(404, "no such file") from None
        return Response(data, media_type=mimetypes.guess_type(key)[0] or "application/octet-stream")

    return app
