"""Who is asking, and what a request may carry.

- Pages: a signed session cookie (HttpOnly, Secure by default, SameSite=Lax) set at sign-in;
  every form carries a CSRF token bound to the session.
- API: `Authorization: Bearer <key>` with a key made by `product-studio keys create` or on the
  Keys page.
- Failed sign-ins are limited per username (counted in the database) and per client address
  (web/throttle.py); sign-out and password changes end every session begun before.
- Request bodies are capped while they stream in, before anything is parsed or spooled.
"""

from __future__ import annotations

import hmac
import json
import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import runtime
from ..auth import key_for
from ..models import ApiKey, User

# --- API keys -----------------------------------------------------------------------------------

bearer = HTTPBearer(auto_error=False, description="An API key: `product-studio keys create NAME`, or the Keys page.")


def require_api_key(creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> str:
    """The calling key's id; 401 without a live key."""
    if creds is None:
        raise HTTPException(401, "an API key is needed: Authorization: Bearer <key>",
                            headers={"WWW-Authenticate": "Bearer"})
    with runtime.database().session() as s:
        record: ApiKey | None = key_for(s, creds.credentials)
        if record is None:
            raise HTTPException(401, "the API key is unknown or revoked", headers={"WWW-Authenticate": "Bearer"})
        return record.id


# --- sessions and CSRF --------------------------------------------------------------------------

class SignInRequired(Exception):
    """Raised by page dependencies; the app answers with a redirect to the sign-in page."""

    def __init__(self, next_path: str):
        self.next_path = next_path


def current_user(request: Request) -> str:
    """The signed-in admin's username. Checked against the database on every request: a deleted
    user is out, and so is a session begun under an older session version (the user signed out,
    or the password changed since), even though its signed cookie is still within max_age.
    Raises SignInRequired (a redirect to the sign-in page) otherwise."""
    user_id = request.session.get("user_id")
    if user_id:
        with runtime.database().session() as s:
            user = s.get(User, user_id)
            if user is not None and request.session.get("session_version") == user.session_version:
                return user.username
    request.session.clear()
    raise SignInRequired(request.url.path + (f"?{request.url.query}" if request.url.query else ""))


def client_address(request: Request) -> str:
    """The client's address as the server saw it: the peer, or the address a proxy named in
    FORWARDED_ALLOW_IPS forwarded (web/server.py); never a header anyone else can set."""
    return request.client.host if request.client else "unknown"


def csrf_token(request: Request) -> str:
    """The session's CSRF token (made on first use)."""
    token = request.session.get("csrf")
    if not token:
        token = request.session["csrf"] = secrets.token_urlsafe(32)
    return token


def check_csrf(request: Request, token: str | None) -> None:
    expected = request.session.get("csrf")
    if not expected or not token or not hmac.compare_digest(expected, token):
        raise HTTPException(403, "the form has expired or did not come from this site: reload the page and retry")


def safe_next(path: str | None) -> str:
    """Where to go after signing in: only a path on this site (no open redirect)."""
    if path and path.startswith("/") and not path.startswith("//") and "\\" not in path:
        return path
    return "/"


# --- body size cap ------------------------------------------------------------------------------

class BodyLimit:
    """Refuse request bodies over `limit` bytes with 413: at once from Content-Length, else as
    soon as the streamed bytes pass the limit (before the rest is read, parsed or spooled)."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await self._refuse(send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise HTTPException(413, self._message())
            return message

        await self.app(scope, counted, send)

    def _message(self) -> str:
        return f"the request is over {self.limit // (1024 * 1024)} MiB (max_upload_bytes)"

    async def _refuse(self, send: Send) -> None:
        body = json.dumps({"error": self._message()}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

