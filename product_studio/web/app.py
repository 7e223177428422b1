"""The web app: admin pages, the JSON API, webhook receivers, signed downloads.

An upload returns as soon as the job is recorded; the work happens in the workers. This process
never imports torch or the models' runtimes (tests/test_web.py proves it), so it starts fast and
stays small.
"""

from __future__ import annotations

import mimetypes
import threading
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import runtime
from ..config import get_settings
from ..errors import ProductStudioError
from ..storage import NotFound
from .security import BodyLimit, SignInRequired, bearer, current_user, require_api_key

_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    # Pages use only their own scripts and styles: an injected tag could not run even if one got through.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
                               "script-src 'self'; frame-ancestors 'none'; form-action 'self'",
}


def create_app(on_shutdown: Callable[[], None] | None = None, *, worker_here: bool = True) -> FastAPI:
    """`on_shutdown` runs when the server stops (uvicorn re-raises SIGTERM afterwards, so a
    caller's `finally` would never run). `worker_here`: a worker runs on this machine (serve's
    own), so the Status page checks the models too; the web door alone loads none."""
    settings = get_settings()

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        # Answer at once; load the image core (NumPy, OpenCV, the pipeline) meanwhile, so the
        # first upload does not wait for it (a request that needs it sooner waits on the import lock).
        threading.Thread(target=_warm, name="warm-imports", daemon=True).start()
        yield
        if on_shutdown is not None:
            on_shutdown()

    # The spec is served below, behind sign-in or an API key; no hosted docs UI (it loads scripts
    # from a CDN, which an offline install cannot reach and the CSP refuses).
    app = FastAPI(title="Product Studio", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None,
                  description="Listing-ready product images from one photo. Authenticate with "
                              "`Authorization: Bearer <API key>`.")
    app.state.worker_here = worker_here
    app.add_middleware(SessionMiddleware, secret_key=runtime.secret("session", settings),
                       session_cookie="ps_session", max_age=settings.session_max_age, same_site="lax",
                       https_only=settings.session_cookie_secure)
    app.add_middleware(BodyLimit, limit=settings.max_upload_bytes)

    app.add_middleware(SecurityHeaders)

    def _wants_html(request: Request) -> bool:
        return not request.url.path.startswith(("/api/", "/webhooks/", "/files/"))

    def _answer(request: Request, status: int, message: str, headers: dict | None = None) -> Response:
        """Errors as JSON for machines, as a page for people."""
        if _wants_html(request) and "text/html" in request.headers.get("accept", ""):
            from .pages import page

            heading = {403: "Not allowed", 404: "Not found", 413: "Too large", 429: "Too many requests"}.get(
                status, "Something went wrong" if status >= 500 else "That did not work")
            return page(request, "error.html", status, heading=heading, message=message)
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    @app.exception_handler(ProductStudioError)
    async def _error(request: Request, exc: ProductStudioError) -> Response:
        return _answer(request, exc.http_status, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return _answer(request, exc.status_code, str(exc.detail), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_, exc: RequestValidationError) -> JSONResponse:
        from .pages import validation_problems

        problems = validation_problems(exc.errors())
        # Without the offending input and context: they may hold what JSON cannot carry (NaN,
        # bytes) or what should not be echoed back; loc and msg say what is wrong.
        detail = [{k: v for k, v in e.items() if k in ("type", "loc", "msg")} for e in exc.errors()]
        return JSONResponse({"error": problems, "detail": jsonable(detail)}, status_code=422)

    @app.exception_handler(ClientDisconnect)
    async def _gone(_, exc: ClientDisconnect) -> Response:
        # The client left (or was dropped for sending too slowly, web/server.py) while its body
        # was read: nobody is there to answer, and it is not a server error.
        return Response(status_code=408)

    @app.exception_handler(SignInRequired)
    async def _sign_in(_, exc: SignInRequired) -> RedirectResponse:
        return RedirectResponse(f"/login?next={quote(exc.next_path, safe='/')}", status_code=303)

    from .api import router as api_router
    from .deliveries import api_router as deliveries_api_router
    from .deliveries import router as deliveries_router
    from .pages import router as pages_router
    from .publishing import router as publishing_router
    from .touchup import router as touchup_router
    from .webhooks import router as webhooks_router

    app.include_router(webhooks_router)  # first: the busiest, latency-bound routes match soonest
    app.include_router(api_router)
    app.include_router(pages_router)
    app.include_router(touchup_router)
    app.include_router(deliveries_router)
    app.include_router(deliveries_api_router)
    app.include_router(publishing_router)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict:
        return {"ok": True}

    @app.get("/api/v1/openapi.json", include_in_schema=False)
    def openapi(request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> dict:
        if creds is not None or not request.session.get("user_id"):
            require_api_key(creds)  # 401 without a key
        else:
            current_user(request)
        return app.openapi()

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        path = settings.templates_dir / "static" / name
        if "/" in name or name.startswith(".") or not path.is_file():
            raise HTTPException(404, "no such file")
        return Response(path.read_bytes(), media_type=mimetypes.guess_type(name)[0] or "application/octet-stream",
                        headers={"Cache-Control": "public, max-age=300"})

    @app.get("/files/{key:path}", include_in_schema=False)
    def download(key: str, expires: int = Query(...), sig: str = Query(...)) -> Response:
        blobs = runtime.store(settings)
        if not hasattr(blobs, "verify") or not blobs.verify(key, expires, sig):
            raise HTTPException(403, "link expired or invalid")
        try:
            reader = blobs.open_read(key)  # streamed a chunk at a time, whatever its size
        except NotFound:
            raise HTTPException(404, "no such file") from None
        ctype = mimetypes.guess_type(key)[0] or "application/octet-stream"
        return StreamingResponse(reader.chunks(), media_type=ctype, headers={"Content-Length": str(reader.size)})

    return app


class SecurityHeaders:
    """Adds _SECURITY_HEADERS to every response. Plain ASGI: `@app.middleware("http")` wraps each
    request in extra tasks and streams, which doubled the CPU time of a webhook delivery."""

    def __init__(self, app: ASGIApp):
        self.app = app
        self.headers = [(k.lower().encode(), v.encode()) for k, v in _SECURITY_HEADERS.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    (k, v) for k, v in self.headers if k not in present]
            await send(message)

        await self.app(scope, receive, with_headers)


def _warm() -> None:
    from . import dispatch, media  # noqa: F401


def jsonable(errors: object) -> object:
    from fastapi.encoders import jsonable_encoder

    return jsonable_encoder(errors, custom_encoder={Exception: str})
