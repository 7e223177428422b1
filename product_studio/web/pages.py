"""The admin pages: sign-in, upload, jobs with live progress, gallery review, API keys, status.

Server-rendered with Jinja (autoescaped: names, titles and categories are always text, never
markup). Every form posts with the session's CSRF token; every action answers with a redirect
back (post/redirect/get), so the pages work without JavaScript. The job page's script only
re-fetches the progress panel while work is running.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ValidationError

from .. import runtime
from ..auth import (
    authenticate,
    create_key,
    end_sessions,
    list_keys,
    record_failed_sign_in,
    revoke_key,
    session_version,
    sign_in_blocked_for,
)
from ..config import get_settings
from ..db import job_progress, list_jobs, review_variant
from ..errors import ProductStudioError
from ..models import JOB_FINAL, Asset, Job, Variant
from ..presets import TARGETS
from ..scenes import all_scenes
from .security import check_csrf, client_address, csrf_token, current_user, safe_next
from .throttle import throttle

User = Annotated[str, Depends(current_user)]
router = APIRouter(include_in_schema=False)


_templates = Jinja2Templates(directory=str(get_settings().templates_dir))
_templates.env.globals["targets"] = TARGETS


def page(request: Request, name: str, status_code: int = 200, **context) -> HTMLResponse:
    context |= {"csrf": csrf_token(request), "user": request.session.get("username")}
    return _templates.TemplateResponse(request, name, context, status_code=status_code)


def back(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


# --- sign-in --------------------------------------------------------------------------------

@router.get("/login")
def login_form(request: Request, next: str = "/") -> HTMLResponse:  # noqa: A002 (the query's name)
    return page(request, "login.html", next=safe_next(next), error=None)


@router.post("/login")
def login(request: Request, username: Annotated[str, Form()], password: Annotated[str, Form()],
          csrf_token: Annotated[str, Form()] = "", next: Annotated[str, Form()] = "/") -> Response:  # noqa: A002
    """Sign in. Failed tries are counted per username (in the database) and per client address
    (web/throttle.py, LOGIN_CLIENT_RATE_LIMIT); over either limit, even the right password waits (429)."""
    check_csrf(request, csrf_token)
    settings = get_settings()
    client, counts = client_address(request), throttle().login_client
    with runtime.database().session() as s:
        wait = max(sign_in_blocked_for(s, username, settings.login_rate_limit), counts.blocked_for(client))
    if wait:
        return page(request, "login.html", 429, next=safe_next(next),
                    error=f"Too many failed sign-ins. Try again in {wait} s.")
    with runtime.database().session() as s:
        user = authenticate(s, username, password)
        signed_in = (user.id, user.session_version) if user else None
        if user is None:
            record_failed_sign_in(s, username, settings.login_rate_limit)
    if signed_in is None:
        counts.hit(client)
        return page(request, "login.html", 401, next=safe_next(next), error="Wrong username or password.")
    request.session.clear()  # a new session at sign-in: nothing carried over from before
    request.session.update(user_id=signed_in[0], session_version=signed_in[1], username=username)
    return back(safe_next(next))


@router.post("/logout")
def logout(request: Request, csrf_token: Annotated[str, Form()] = "") -> Response:
    """Sign out: ends this session and every other one the admin began before (a copied cookie
    stops working at once, not after max_age)."""
    check_csrf(request, csrf_token)
    user_id = request.session.get("user_id")
    if user_id:
        with runtime.database().session() as s:
            if request.session.get("session_version") == session_version(s, user_id):
                end_sessions(s, user_id)
    request.session.clear()
    return back("/login")


# --- upload ---------------------------------------------------------------------------------

@router.get("/")
def upload_form(request: Request, user: User) -> HTMLResponse:
    settings = get_settings()
    return page(request, "upload.html", scenes=all_scenes(settings), error=None,
                max_files=settings.max_upload_files, max_mib=settings.max_input_bytes // (1024 * 1024))


@router.post("/upload")
async def upload(request: Request, user: User, files: list[UploadFile], targets: Annotated[list[str], Form()] = [],  # noqa: B006
                 scene: Annotated[str, Form()] = "", title: Annotated[str, Form()] = "",
                 category: Annotated[str, Form()] = "", csrf_token: Annotated[str, Form()] = "") -> Response:
    from .dispatch import submit_job
    from .media import read_uploads

    check_csrf(request, csrf_token)
    settings = get_settings()
    try:
        if not targets:
            raise ProductStudioError("choose at least one target")
        uploads = await read_uploads(files, settings, title=title, category=category)
        job = (await run_in_threadpool(submit_job, uploads, targets=targets, scene=scene or None,
                                       origin="upload", settings=settings)).job
    except ProductStudioError as exc:
        status = exc.http_status if exc.http_status != 500 else 422
        return page(request, "upload.html", status, scenes=all_scenes(settings), error=str(exc),
                    max_files=settings.max_upload_files, max_mib=settings.max_input_bytes // (1024 * 1024))
    return back(f"/jobs/{job.id}")


# --- jobs and gallery -----------------------------------------------------------------------

@router.get("/jobs")
def jobs(request: Request, user: User, offset: int = 0) -> HTMLResponse:
    offset = min(max(0, offset), 10**9)
    with runtime.database().session() as s:
        rows = [(j, counts, len(j.assets)) for j, counts in list_jobs(s, limit=50, offset=offset)]
    return page(request, "jobs.html", rows=rows, offset=offset)


def _job_view(job_id: str, review: bool = False) -> dict:
    """The job page's data; `review` keeps only the photos whose cut-out needs review."""
    with runtime.database().session() as s:
        job = s.get(Job, job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id}")
        counts = job_progress(s, job_id)
        assets = [{"asset": a, "variants": list(a.variants)} for a in job.assets]
        approved = sum(1 for a in assets for v in a["variants"] if v.approved)
        to_review = sum(1 for a in job.assets if a.review_reason)
        if review:
            assets = [a for a in assets if a["asset"].review_reason]
        from ..jobs.documents import callback_document
        from .publishing import publish_view

        return {"job": job, "counts": counts, "assets": assets, "approved": approved, "to_review": to_review,
                "review_only": review, "final": job.status in JOB_FINAL, "callback": callback_document(job),
                **publish_view(s, job_id)}


@router.get("/jobs/{job_id}")
def job_page(request: Request, user: User, job_id: str, review: bool = False) -> HTMLResponse:
    return page(request, "job.html", scenes=all_scenes(get_settings()), **_job_view(job_id, review))


@router.get("/jobs/{job_id}/panel")
def job_panel(request: Request, user: User, job_id: str, review: bool = False) -> HTMLResponse:
    """The progress and gallery part of the job page, re-fetched while the job runs."""
    view = _job_view(job_id, review)
    response = page(request, "_panel.html", scenes=all_scenes(get_settings()), **view)
    response.headers["X-Job-Final"] = "1" if view["final"] else "0"
    return response


@router.post("/variants/{variant_id}/review")
def review(request: Request, user: User, variant_id: str, action: Annotated[str, Form()],
           csrf_token: Annotated[str, Form()] = "") -> Response:
    check_csrf(request, csrf_token)
    decision = {"approve": True, "reject": False, "clear": None}
    if action not in decision:
        raise HTTPException(422, "action is approve, reject or clear")
    with runtime.database().session() as s:
        job_id = _job_of(s, variant_id)
        review_variant(s, variant_id, decision[action])
    from .dispatch import reviewed

    reviewed(variant_id, decision[action])  # on-approve stores: approving publishes
    return back(f"/jobs/{job_id}#v-{variant_id}")


@router.post("/variants/{variant_id}/regenerate")
def regenerate(request: Request, user: User, variant_id: str, scene: Annotated[str, Form()] = "",
               seed: Annotated[str, Form()] = "", csrf_token: Annotated[str, Form()] = "") -> Response:
    check_csrf(request, csrf_token)
    with runtime.database().session() as s:
        job_id = _job_of(s, variant_id)
    from .dispatch import regenerate_variant
    from .schemas import Regenerate

    # The API's own model, so both doors accept and refuse exactly the same seeds and scenes.
    body = form_model(Regenerate, seed=seed.strip() or None, scene=scene or None)
    new = regenerate_variant(variant_id, seed=body.seed, scene=body.scene)
    return back(f"/jobs/{job_id}#v-{new.id}")


def validation_problems(errors: list[dict]) -> str:
    """pydantic's errors as one line, "field.path: message; ...": what every door answers."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors)


def form_model(model: type[BaseModel], **fields: object) -> BaseModel:
    """A page form's fields validated by the JSON API's pydantic model for the same action, so
    pages and API share one validation (pydantic's, in lax mode: "12" is 12, "²" is refused).
    Raises HTTPException 422 naming each field's problem, as the API's answer does."""
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        raise HTTPException(422, validation_problems(exc.errors())) from None


def _job_of(session, variant_id: str) -> str:
    v = session.get(Variant, variant_id)
    if v is None:
        raise HTTPException(404, f"no variant {variant_id}")
    return v.asset.job_id


@router.get("/variants/{variant_id}/download")
def download(user: User, variant_id: str) -> Response:
    from .media import variant_download

    return variant_download(variant_id)


@router.get("/jobs/{job_id}/approved.zip")
def download_approved(user: User, job_id: str) -> Response:
    from .media import NO_APPROVED, approved_zip, content_disposition

    with runtime.database().session() as s:
        if s.get(Job, job_id) is None:
            raise HTTPException(404, f"no job {job_id}")
    chunks, count = approved_zip(job_id)
    if not count:
        raise HTTPException(409, NO_APPROVED)
    return StreamingResponse(chunks, media_type="application/zip",
                    headers={"Content-Disposition": content_disposition(f"job-{job_id[:8]}-approved.zip")})


# What each kind of preview shows: a variant's file, or a photo's source.
_PREVIEWS = {"variant": (Variant, "key"), "source": (Asset, "source_key")}


@router.get("/previews/{kind}/{item_id}.jpg")
def item_preview(user: User, kind: str, item_id: str) -> Response:
    if kind not in _PREVIEWS:
        raise HTTPException(404, f"no preview kind {kind!r}")
    model, column = _PREVIEWS[kind]
    with runtime.database().session() as s:
        item = s.get(model, item_id)
        key = getattr(item, column) if item else None
    return _preview(key)


def _preview(key: str | None) -> Response:
    from .media import preview

    if not key:
        raise HTTPException(404, "no such image")
    # Previews are content-addressed, so never stale: let the browser keep them.
    return Response(preview(key), media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})


# --- API keys -------------------------------------------------------------------------------

@router.get("/keys")
def keys(request: Request, user: User) -> HTMLResponse:
    with runtime.database().session() as s:
        rows = list_keys(s)
    return page(request, "keys.html", keys=rows, new_key=None, error=None)


@router.post("/keys")
def add_key(request: Request, user: User, name: Annotated[str, Form()] = "",
            csrf_token: Annotated[str, Form()] = "") -> HTMLResponse:
    check_csrf(request, csrf_token)
    error, new_key = None, None
    try:
        with runtime.database().session() as s:
            new_key = create_key(s, name).key
    except ProductStudioError as exc:
        error = str(exc)
    with runtime.database().session() as s:
        rows = list_keys(s)
    # Shown once, in this answer only; not a redirect, so the key is never in a URL or a log.
    return page(request, "keys.html", 201 if new_key else 422, keys=rows, new_key=new_key, error=error)


@router.post("/keys/{key_id}/revoke")
def drop_key(request: Request, user: User, key_id: str, csrf_token: Annotated[str, Form()] = "") -> Response:
    check_csrf(request, csrf_token)
    with runtime.database().session() as s:
        revoke_key(s, key_id)
    return back("/keys")


# --- status ---------------------------------------------------------------------------------

_status_cache: dict[str, object] = {}
STATUS_TTL = 30.0
STATUS_TIMEOUT = 120.0  # s the checks may take in all


async def doctor_checks(web_only: bool = False) -> AsyncIterator[dict]:
    """`product-studio doctor`'s checks, each as soon as the child process reports it (`--jsonl`):
    the checks import torch and the models' runtimes, which this web process never loads; with
    `web_only`, no model checks (`--web`: no worker on this machine). Cached for STATUS_TTL
    seconds. Never raises: a child that fails or hangs is itself a failing check."""
    if _status_cache and time.monotonic() - float(_status_cache["at"]) < STATUS_TTL:  # type: ignore[arg-type]
        for check in _status_cache["checks"]:  # type: ignore[attr-defined]
            yield check
        return
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "product_studio.doctor", "--jsonl",
                                                *(["--web"] if web_only else []), stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.DEVNULL)
    deadline = time.monotonic() + STATUS_TIMEOUT
    checks: list[dict] = []
    try:
        while True:
            line = await asyncio.wait_for(proc.stdout.readline(), timeout=max(0.1, deadline - time.monotonic()))
            if not line:
                break
            try:
                check = json.loads(line)
            except ValueError:
                continue
            checks.append(check)
            yield check
    except TimeoutError:
        pass
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
    if not checks or proc.returncode not in (0, None) and len(checks) < 3:
        check = {"name": "doctor", "status": "fail", "detail": "the checks did not finish or report"}
        checks.append(check)
        yield check
    _status_cache.update(at=time.monotonic(), checks=checks)


@router.get("/status")
async def status(request: Request, user: User) -> Response:
    """The Status page, streamed: its frame at once, then each check's row as it arrives (the
    browser shows them as they come; no script needed)."""
    web_only = not request.app.state.worker_here
    frame = _templates.get_template("status.html").render(
        request=request, csrf=csrf_token(request), user=request.session.get("username"), web_only=web_only)
    head, tail = frame.split("<!--checks-->", 1)
    row = _templates.get_template("_status_row.html")

    async def body() -> AsyncIterator[str]:
        yield head
        async for check in doctor_checks(web_only=web_only):
            yield row.render(c=check)
        yield tail

    return StreamingResponse(body(), media_type="text/html; charset=utf-8")
