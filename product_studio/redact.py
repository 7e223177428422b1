"""Credentials out of everything shown or written: doctor's lines (and so the web Status page),
batch reports and the batch command's output.

Two passes, because a secret reaches text two ways:

1. inside a URL (a broker, database or storage URL, or an exception quoting one): the password
   of the userinfo (`scheme://user:PASSWORD@host`, RFC 3986 section 3.2.1, which deprecates
   passwords in URLs for this very reason) and the values of query parameters that carry
   credentials (`secret_key=`, `token=`, `X-Amz-Signature=`...) are replaced by `***`;
2. anywhere else: each configured secret value (`known_secrets`) is replaced wherever it appears,
   also percent-encoded.

    redact_url("redis://:hunter2@cache:6379/0")          # 'redis://:***@cache:6379/0'
    redact("cannot reach amqp://bob:pw@mq//", ["pw"])     # 'cannot reach amqp://bob:***@mq//'

Neither kombu's `maybe_sanitize_url` nor SQLAlchemy's `URL.render_as_string(hide_password=True)`
touches query parameters (an s3:// storage URL may carry `secret_key=`), and neither scans free
text, hence this module.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus, unquote, urlsplit, urlunsplit

MASK = "***"
# Query parameters whose values are credentials (compared without case, "-" read as "_").
SECRET_PARAMETERS = frozenset({
    "password", "passwd", "pass", "pwd", "secret", "secret_key", "secretkey", "client_secret", "access_key",
    "accesskey", "aws_secret_access_key", "aws_access_key_id", "token", "access_token", "auth_token",
    "session_token", "api_key", "apikey", "key", "sig", "signature", "x_amz_signature", "x_amz_credential",
    "x_amz_security_token", "credential", "credentials", "auth",
})
# A URL inside free text: a scheme, "://", then anything up to whitespace or a quote/bracket.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]{0,31}://[^\s'\"<>`]+")
# Values shorter than this are not replaced in free text: "0" or "guest" would mangle prose.
MIN_SECRET_LENGTH = 6


def redact_url(url: str) -> str:
    """`url` with its userinfo password and credential-carrying query values replaced by MASK.

    The user name, host, port, path and the other parameters stay, so the line still says where
    it points. Text that does not parse as a URL is returned unchanged (run `redact` on text).
    Never raises."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        if ":" in userinfo:
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}:{MASK}@{hostport}"
    query = parts.query
    if query:
        fields = []
        for field in query.split("&"):
            name, eq, _value = field.partition("=")
            if eq and name.lower().replace("-", "_") in SECRET_PARAMETERS:
                field = f"{name}={MASK}"
            fields.append(field)
        query = "&".join(fields)
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every URL in it passed through `redact_url`, then every value of `secrets`
    (at least MIN_SECRET_LENGTH characters; also as percent-encoded in a URL) replaced by MASK.
    Never raises."""
    if not text:
        return text
    out = _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)
    for secret in sorted({s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True):
        for form in {secret, quote(secret, safe=""), quote_plus(secret)}:
            out = out.replace(form, MASK)
    return out


def _url_password(url: str | None) -> list[str]:
    """The userinfo password and credential query values of a URL, raw and percent-decoded."""
    if not url:
        return []
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    found = []
    userinfo = parts.netloc.rpartition("@")[0]
    if ":" in userinfo:
        raw = userinfo.split(":", 1)[1]
        found += [raw, unquote(raw)]
    for name, value in parse_qsl(parts.query, keep_blank_values=False):
        if name.lower().replace("-", "_") in SECRET_PARAMETERS:
            found.append(value)
    return found


def known_secrets(settings: Any) -> list[str]:
    """Every credential the settings hold or point to: the passwords inside the broker, database,
    storage and rate-limit storage URLs, the signing secrets (storage, callback, session; the
    configured ones: generated ones stay in the database and nothing prints them), the webhook
    secrets and API tokens, and AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN from the environment."""
    found: list[str] = []
    for name in ("broker_url", "database_url", "storage_url", "rate_limit_storage", "bigcommerce_api_url"):
        found += _url_password(getattr(settings, name, None))
    for name in ("storage_secret", "callback_secret", "session_secret", "shopify_webhook_secret",
                 "woocommerce_webhook_secret", "bigcommerce_webhook_secret", "bigcommerce_api_token",
                 "generic_webhook_secret", "shopify_access_token", "woocommerce_consumer_key",
                 "woocommerce_consumer_secret", "woocommerce_wp_app_password"):
        value = getattr(settings, name, None)
        if value is not None:
            text = value.get_secret_value()
            found += [text, *text.split(",")]  # rotations list several
    found += [os.environ[v] for v in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN") if os.environ.get(v)]
    return [s.strip() for s in found if s and s.strip()]
