"""Who may use the service: admins (username + password, for the pages) and API keys (machines).

Passwords are hashed with argon2id. Failed sign-ins are counted per username and each user has a
session version (sign-out and password changes bump it, ending older sessions), both in the
database, so every web process sees the same. API keys are random 256-bit tokens, so a plain SHA-256 of
the key is enough to store (no brute force can reach them) and lets a request find its key by
an indexed lookup; the key itself is shown once, when it is made.
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from limits import parse
from sqlalchemy import case, or_, select, update
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
    """A new password for `username`; every session begun before ends (the session version is
    bumped) and its failed sign-ins are forgotten. Raises BadInput for a short password or an
    unknown user."""
    if len(password) < MIN_PASSWORD:
        raise BadInput(f"a password needs at least {MIN_PASSWORD} characters")
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise BadInput(f"no user {username!r}")
    user.password_hash = _hasher.hash(password)
    user.failed_logins, user.failed_login_at = 0, None
    end_sessions(session, user.id)


def authenticate(session: Session, username: str, password: str) -> User | None:
    """The user if the password is right, else None (the same time either way). A success
    forgets the username's failed sign-ins."""
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
    user.failed_logins, user.failed_login_at = 0, None
    return user


# --- sessions and failed sign-ins (in the database: every web process sees the same) ----------

def session_version(session: Session, user_id: str) -> int | None:
    """The user's current session version (a session begun under another one is over), or None
    when the user no longer exists."""
    return session.scalar(select(User.session_version).where(User.id == user_id))


def end_sessions(session: Session, user_id: str) -> None:
    """End every session of the user begun so far (sign-out, password change): bumps the
    session version that each request's session must match (web/security.current_user)."""
    session.execute(update(User).where(User.id == user_id).values(session_version=User.session_version + 1)
                    .execution_options(synchronize_session=False))


def _window(rate: str) -> tuple[int, timedelta]:
    """A `limits` rate ("5/minute") as (allowed failures, window)."""
    item = parse(rate)
    return item.amount, timedelta(seconds=item.get_expiry())


def sign_in_blocked_for(session: Session, username: str, rate: str) -> int:
    """Seconds until `username` may try to sign in again, after `rate` ("5/minute": 5 failures
    in a fixed window that begins at the first) was used up; 0 when it may try now (also for an
    unknown username: the per-address count covers those)."""
    allowed, window = _window(rate)
    row = session.execute(select(User.failed_logins, User.failed_login_at).where(User.username == username)).first()
    if row is None or row.failed_login_at is None or row.failed_logins < allowed:
        return 0
    left = (row.failed_login_at + window - utcnow()).total_seconds()
    return max(0, math.ceil(left))


def record_failed_sign_in(session: Session, username: str, rate: str) -> None:
    """Count one failed sign-in for `username` (nothing for an unknown name) in one conditional
    UPDATE, so concurrent failures from several web processes are all counted: a window older
    than `rate`'s period starts again at 1."""
    _, window = _window(rate)
    now = utcnow()
    fresh = or_(User.failed_login_at.is_(None), User.failed_login_at < now - window)
    session.execute(update(User).where(User.username == username).values(
        failed_logins=case((fresh, 1), else_=User.failed_logins + 1),
        failed_login_at=case((fresh, now), else_=User.failed_login_at)).execution_options(synchronize_session=False))


def has_users(session: Session) -> bool:
    return session.scalar(select(User.id).limit(1)) is not None


def password_is(session: Session, username: str, password: str) -> bool:
    """Whether `password` is the user's password now, changing nothing (no sign-in is recorded)."""
    user = session.scalar(select(User).where(User.username == username))
    try:
        return user is not None and _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


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
