"""What each store platform sends, read two ways:

- at the door (fast, no I/O): the delivery's claim (id, topic, source) and its signature over the
  RAW body, checked in constant time against each of a store's secrets (rotations have two);
- in the intake task: the body turned into one ProductEvent (id, updated_at, title, category,
  images), fetching BigCommerce's product by API since its payload is only a pointer.

DESIGN.md ("Webhooks") lists the headers; the payload fields used are the platforms' documented ones.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import re
import time
from array import array
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from .. import callbacks
from ..errors import BadInput
from .stores import Store


@dataclass(frozen=True)
class Claim:
    """What a request says about itself (unverified until its signature is checked)."""

    delivery_id: str | None
    topic: str | None
    source: str | None  # shop domain, site URL or store hash: which store it says it is


@dataclass(frozen=True)
class ImageRef:
    key: str  # fingerprint of this version of the image: platform id, URL, modification time
    url: str
    remote_id: str | None = None  # the platform's id of the image (publishing records the ones it made)
    alt: str | None = None  # its alt text / description, where publishing puts its mark


@dataclass(frozen=True)
class ProductEvent:
    product_id: str | None  # None: nothing to compare with (a generic delivery without one)
    updated_at: dt.datetime | None
    title: str | None
    category: str | None
    images: tuple[ImageRef, ...]
    targets: tuple[str, ...] = ()  # generic deliveries may choose; empty: the store's
    scenes: tuple[str, ...] = ()
    callback_url: str | None = None


@dataclass(frozen=True)
class Verdict:
    store: Store | None
    reason: str | None = None  # why it was refused


class PayloadError(BadInput):
    """A verified body that does not say what its platform documents."""


def _b64_hmac_ok(secrets: list[str], body: bytes, header: str) -> bool:
    try:
        given = base64.b64decode(header.strip(), validate=True)
    except (ValueError, TypeError):
        return False
    ok = False
    for secret in secrets:  # no early exit: every secret is tried, each in constant time
        ok |= hmac.compare_digest(hmac.new(secret.encode(), body, hashlib.sha256).digest(), given)
    return ok


def parse_time(value: Any) -> dt.datetime | None:
    """ISO 8601 (naive means UTC, as WooCommerce's *_gmt fields) or Unix seconds; None if absent."""
    if value in (None, ""):
        return None
    try:
        if isinstance(value, int | float):
            return dt.datetime.fromtimestamp(value, dt.UTC)
        parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError):
        raise PayloadError(f"{value!r} is not a time") from None
    return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed.astimezone(dt.UTC)


MAX_DEPTH = 64  # nesting of arrays and objects a payload may have; the platforms' run to about 6
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = re.compile(rb"[^\[\]{}]+")
_STEP = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # +1 opens, -1 (as a signed byte) closes


class UnreadableBody(PayloadError):
    """A verified body that is not a JSON document at all (not UTF-8, not JSON, nested deeper
    than MAX_DEPTH, not an object): the door answers 400."""


def too_deep(body: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether arrays and objects nest more than `limit` deep in `body` (brackets inside strings
    do not count). Linear time in C-level loops, no recursion: safe and fast on any bytes, also
    ones that are not JSON (a 5 MiB body of brackets takes about 0.1 s)."""
    if body.count(b"[") + body.count(b"{") <= limit:  # the common case
        return False
    brackets = _NOT_BRACKET.sub(b"", _STRING.sub(b"", body)).translate(_STEP)
    return max(accumulate(array("b", brackets)), default=0) > limit


def _json(body: bytes | str) -> Any:
    """`body` parsed as JSON (RFC 8259) with its nesting bounded by MAX_DEPTH, so no body can
    exhaust the parser's recursion. Raises UnreadableBody; never RecursionError."""
    raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    if too_deep(raw):
        raise UnreadableBody(f"the body nests deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise UnreadableBody("the body is not JSON") from None


def _object(doc: Any, what: str) -> dict:
    if not isinstance(doc, dict):
        raise PayloadError(f"{what} is not a JSON object")
    return doc


def json_object(body: bytes | str, what: str) -> dict:
    """`body` parsed (bounded, see `_json`); UnreadableBody unless it is a JSON object."""
    doc = _json(body)
    if not isinstance(doc, dict):
        raise UnreadableBody(f"{what} is not a JSON object")
    return doc


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return str(value).strip()[:500] or None


def _key(*parts: Any) -> str:
    return "|".join(str(p) for p in parts if p not in (None, ""))


class Platform:
    """One platform's receiver rules. The door calls, in this order: `claim` (headers only),
    `verify` (the signature over the raw bytes), and only for an authentic request `read_claim`,
    which may parse the body. An unauthenticated body is never parsed."""

    name = ""
    topics: frozenset[str] = frozenset()
    signature_header = ""
    source_in_body = False  # True: the store is named inside the payload, so verify against them all

    def claim(self, headers: Mapping[str, str]) -> Claim:
        """What the headers say (unverified); never reads the body."""
        raise NotImplementedError

    def read_claim(self, claim: Claim, body: bytes) -> Claim:
        """The claim completed from a VERIFIED body, for platforms that put their delivery id,
        topic or store in the payload. Raises UnreadableBody (a 400) when it does not parse."""
        return claim

    def verify(self, candidates: tuple[Store, ...], headers: Mapping[str, str], body: bytes) -> Verdict:
        """The store whose secret signed this body, or why none did."""
        if not candidates:
            return Verdict(None, f"no {self.name} store is configured for this source")
        header = headers.get(self.signature_header)
        if not header:
            return Verdict(None, f"missing {self.signature_header} header")
        for store in candidates:
            if self.signed(store, header, body):
                return Verdict(store)
        return Verdict(None, f"bad signature ({self.signature_header} matches no secret)")

    def signed(self, store: Store, header: str, body: bytes) -> bool:
        return _b64_hmac_ok(store.secret_values(), body, header)

    def event(self, store: Store, body: str, settings: Any) -> ProductEvent:
        raise NotImplementedError


class Shopify(Platform):
    name = "shopify"
    topics = frozenset({"products/create", "products/update"})
    signature_header = "x-shopify-hmac-sha256"

    def claim(self, headers: Mapping[str, str]) -> Claim:
        return Claim(headers.get("x-shopify-webhook-id"), headers.get("x-shopify-topic"),
                     headers.get("x-shopify-shop-domain"))

    def event(self, store: Store, body: str, settings: Any) -> ProductEvent:
        p = _object(_json(body), "the product")
        if p.get("id") is None:
            raise PayloadError("the product has no id")
        images = []
        for img in p.get("images") or ():
            if isinstance(img, dict) and img.get("src"):
                images.append(ImageRef(_key(img.get("id"), img["src"], img.get("updated_at")), str(img["src"]),
                                       _text(img.get("id")), _text(img.get("alt"))))
        if not images:  # newer API versions list media instead
            for m in p.get("media") or ():
                src = ((m.get("image") or m.get("preview_image") or {}).get("src") if isinstance(m, dict) else None)
                if src and m.get("media_content_type", "IMAGE") == "IMAGE":
                    images.append(ImageRef(_key(m.get("id"), src, m.get("updated_at")), str(src),
                                           _text(m.get("id")), _text(m.get("alt"))))
        taxonomy = p.get("category")  # newer API versions: the standard product taxonomy
        category = p.get("product_type") or (taxonomy.get("name") if isinstance(taxonomy, dict) else None)
        return ProductEvent(str(p["id"]), parse_time(p.get("updated_at")), _text(p.get("title")), _text(category),
                            tuple(images))


class WooCommerce(Platform):
    name = "woocommerce"
    topics = frozenset({"product.created", "product.updated"})
    signature_header = "x-wc-webhook-signature"
    _PING = re.compile(rb"webhook_id=(\d+)")

    def claim(self, headers: Mapping[str, str]) -> Claim:
        return Claim(headers.get("x-wc-webhook-delivery-id"), headers.get("x-wc-webhook-topic"),
                     headers.get("x-wc-webhook-source"))

    def ping(self, body: bytes) -> str | None:
        """WooCommerce's unsigned creation ping (form body webhook_id=N) wants a 200; its id, or None."""
        match = self._PING.fullmatch(body.strip())
        return match.group(1).decode() if match else None

    def event(self, store: Store, body: str, settings: Any) -> ProductEvent:
        p = _object(_json(body), "the product")
        if p.get("id") is None:
            raise PayloadError("the product has no id")
        images = tuple(ImageRef(_key(img.get("id"), img["src"], img.get("date_modified_gmt")), str(img["src"]),
                                _text(img.get("id")), " ".join(filter(None, (_text(img.get("alt")),
                                                                              _text(img.get("name"))))) or None)
                       for img in p.get("images") or () if isinstance(img, dict) and img.get("src"))
        cats = [c.get("name") for c in p.get("categories") or () if isinstance(c, dict) and c.get("name")]
        updated = p.get("date_modified_gmt") or p.get("date_created_gmt")
        return ProductEvent(str(p["id"]), parse_time(updated), _text(p.get("name")), _text(cats[0] if cats else None),
                            images)


class BigCommerce(Platform):
    """Thin payload {store_id, producer, scope, data: {type, id}, hash}. BigCommerce signs nothing:
    the hook is registered with a header X-Product-Studio-Token carrying the store's secret."""

    name = "bigcommerce"
    topics = frozenset({"store/product/created", "store/product/updated"})
    signature_header = "x-product-studio-token"

    source_in_body = True  # the token is checked against every BigCommerce store, then the payload read

    def claim(self, headers: Mapping[str, str]) -> Claim:
        return Claim(None, None, None)  # all of it is in the payload, read once the token is checked

    def read_claim(self, claim: Claim, body: bytes) -> Claim:
        doc = json_object(body, "the payload")
        producer = str(doc.get("producer") or "")
        return Claim(_text(doc.get("hash")), _text(doc.get("scope")),
                     producer.removeprefix("stores/") if producer.startswith("stores/") else None)

    def signed(self, store: Store, header: str, body: bytes) -> bool:
        given = header.strip().encode()
        ok = False
        for secret in store.secret_values():
            ok |= hmac.compare_digest(secret.encode(), given)
        return ok

    def event(self, store: Store, body: str, settings: Any) -> ProductEvent:
        from .bigcommerce import get_product

        doc = _object(_json(body), "the payload")
        data = _object(doc.get("data"), "data")
        producer = str(doc.get("producer") or "")
        if data.get("id") is None or not producer.startswith("stores/"):
            raise PayloadError("the payload names no product (data.id) or no store (producer)")
        p = get_product(store, producer.removeprefix("stores/"), str(data["id"]), settings)
        images = []
        for img in sorted((i for i in p.get("images") or () if isinstance(i, dict)),
                          key=lambda i: (not i.get("is_thumbnail"), i.get("sort_order") or 0)):
            url = img.get("url_zoom") or img.get("url_standard")
            if url:
                images.append(ImageRef(_key(img.get("id"), url, img.get("date_modified")), str(url),
                                       _text(img.get("id")), " ".join(filter(None, (
                                           _text(img.get("description")), _text(img.get("image_file"))))) or None))
        return ProductEvent(str(p.get("id", data["id"])), parse_time(p.get("date_modified")), _text(p.get("name")),
                            _text(p.get("type")), tuple(images))


class Generic(Platform):
    """{id, images: [url...], title, category, targets, scenes, callback_url} (+ optional product_id,
    updated_at), signed with X-Product-Studio-Signature: t=<unix>,v1=<hex hmac of "t.body">."""

    name = "generic"
    topics = frozenset({"product"})
    signature_header = callbacks.HEADER.lower()

    def claim(self, headers: Mapping[str, str]) -> Claim:
        return Claim(None, "product", None)  # the id is in the body, read once the signature is checked

    def read_claim(self, claim: Claim, body: bytes) -> Claim:
        return Claim(_text(json_object(body, "the body").get("id")), "product", None)

    def verify(self, candidates: tuple[Store, ...], headers: Mapping[str, str], body: bytes) -> Verdict:
        verdict = super().verify(candidates, headers, body)
        if verdict.store is None and headers.get(self.signature_header):
            stamp = re.search(r"(?:^|,)\s*t=(\d+)", headers[self.signature_header])
            if stamp and abs(time.time() - int(stamp.group(1))) > callbacks.TOLERANCE:
                return Verdict(None, f"signature timestamp is more than {callbacks.TOLERANCE} s away from now "
                                     "(a replay?)")
        return verdict

    def signed(self, store: Store, header: str, body: bytes) -> bool:
        return callbacks.verify(store.secret_values(), body, header)

    def event(self, store: Store, body: str, settings: Any) -> ProductEvent:
        return generic_event(json_object(body, "the body"), settings)


def _strings(doc: dict, name: str) -> tuple[str, ...]:
    value = doc.get(name) or []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise PayloadError(f"{name} must be a list of strings")
    return tuple(value)


def generic_event(doc: dict, settings: Any) -> ProductEvent:
    """Also run at the door, so a sender learns of a bad body (unknown target...) at once."""
    from ..presets import get_target
    from ..scenes import get_scene

    images = _strings(doc, "images")
    if not images:
        raise PayloadError("images must list at least one URL")
    targets, scenes = _strings(doc, "targets"), _strings(doc, "scenes")
    for t in targets:
        get_target(t)
    for scene in scenes:
        get_scene(scene, settings)
    callback = doc.get("callback_url")
    if callback is not None and not (isinstance(callback, str) and callback.startswith(("http://", "https://"))):
        raise PayloadError("callback_url must be an http(s) URL")
    pid = doc.get("product_id")
    return ProductEvent(_text(pid) if pid is not None else None, parse_time(doc.get("updated_at")),
                        _text(doc.get("title")), _text(doc.get("category")),
                        tuple(ImageRef(url, url) for url in dict.fromkeys(images)), targets, scenes, callback)


PLATFORMS: dict[str, Platform] = {p.name: p for p in (Shopify(), WooCommerce(), BigCommerce(), Generic())}
