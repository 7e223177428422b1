"""Who may use the service: admins (username + password, for the pages) and API keys (machines).

Passwords are hashed with argon2id. API keys are random 256-bit tokens, so a plain SHA-256 of
the key is enough to store (no brute force can reach them) and lets a request find its key by
an indexed lookup; the key itself is shown once, when it is made.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from .errors import BadInput
from .models import ApiKey, User, utcnow

KEY_PREFIX = "ps_"
_USE_RESOLUTION = timedelta(minutes=1)
_USERNAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
MIN_PASSWORD = 10
_hasher = PasswordHasher()


@cache
def _dummy_hash() -> str:
    """Verified against when the username is unknown, so a wrong name costs as much time as a
    wrong password. Made on first use: hashing at import would slow every start."""
    return _hasher.hash(secrets.token_hex(16))


# --- admins -----------------------------------------------------------------------------------

def add_user(session: Session, username: str, password: str) -> User:
    if not _USERNAME.match(username):
        raise BadInput("a username is 1-64 letters, digits or . _ @ -")
    if len(password) < MIN_PASSWORD:
        raise BadInput(f"a password needs at least {MIN_PASSWORD} characters")
    if session.scalar(select(User).where(User.username == username)) is not None:
        raise BadInput(f"user {username!r} exists already")
    user = User(username=username, password_hash=_hasher.hash(password))
    session.add(user)
    session.flush()
    return user


def set_password(session: Session, username: str, password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise BadInput(f"a password needs at least {MIN_PASSWORD} characters")
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise BadInput(f"no user {username!r}")
    user.password_hash = _hasher.hash(password)


def authenticate(session: Session, username: str, password: str) -> User | None:
    """The user if the password is right, else None (the same time either way)."""
    user = session.scalar(select(User).where(User.username == username))
    try:
        _hasher.verify(user.password_hash if user else _dummy_hash(), password)
    except (VerificationError, InvalidHashError):
        return None
    if user is None:
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    user.last_login_at = utcnow()
    return user


def has_users(session: Session) -> bool:
    return session.scalar(select(User.id).limit(1)) is not None


# --- API keys ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class NewKey:
    record: ApiKey
    key: str  # shown once; only its hash is kept


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(session: Session, name: str) -> NewKey:
    name = name.strip()
    if not name or len(name) > 128:
        raise BadInput("an API key needs a name of 1-128 characters")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    record = ApiKey(name=name, prefix=key[: len(KEY_PREFIX) + 6], key_hash=_digest(key))
    session.add(record)
    session.flush()
    return NewKey(record, key)


def list_keys(session: Session, *, include_revoked: bool = False) -> list[ApiKey]:
    query = select(ApiKey).order_by(ApiKey.created_at)
    if not include_revoked:
        query = query.where(ApiKey.revoked_at.is_(None))
    return list(session.scalars(query))


def revoke_key(session: Session, key_id: str) -> bool:
    """Revoke a key by id or by its shown prefix; True if a live key was revoked."""
    rows = session.execute(
        update(ApiKey)
        .where((ApiKey.id == key_id) | (ApiKey.prefix == key_id), ApiKey.revoked_at.is_(None))
        .values(revoked_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return rows.rowcount > 0  # type: ignore[attr-defined]


def key_for(session: Session, key: str) -> ApiKey | None:
    """The live key record for a presented key, else None; notes when it was last used."""
    if not key.startswith(KEY_PREFIX):
        return None
    record = session.scalar(select(ApiKey).where(ApiKey.key_hash == _digest(key), ApiKey.revoked_at.is_(None)))
    now = utcnow()
    if record is not None and (record.last_used_at is None or now - record.last_used_at > _USE_RESOLUTION):
        record.last_used_at = now  # at most once a minute: a busy client must not write on every call
    return record
