"""A stand-in for a WooCommerce shop's REST APIs (WooCommerce's wc/v3 products, WordPress's
wp/v2 media), on loopback.

What it checks, as the WooCommerce and WordPress REST API references document them:
- /wp-json/wc/v3/... takes the consumer key and secret (HTTP Basic, or consumer_key/consumer_secret
  parameters) and nothing else; /wp-json/wp/v2/media takes only a WordPress user's application
  password (HTTP Basic, spaces in it ignored): the consumer key there is 401 rest_not_logged_in;
- a media upload is the file as the body with Content-Disposition: attachment; filename=...,
  an image Content-Type, JPEG or PNG bytes (else 400 rest_upload_...); alt_text and title as
  parameters; answers 201 with id, source_url, alt_text, title.rendered; ?search= finds by title;
- PUT /products/<id> {images: [...]} replaces the whole list: {id} must be an attachment in the
  library (else 400 woocommerce_product_invalid_image_id), {src} is downloaded by the shop (as
  WooCommerce sideloads it); alt and name set the attachment's alt text and title; the first is the
  featured image;
- faults on demand: `throttle_once` answers one method 429 with Retry-After and counts requests
  sent before that (`too_soon`); `fail_once` answers one method 502 before or after doing it;
  `refuse_next` answers the next product update 400 with a WooCommerce error.

It counts the images attached to each product (`attached`, by alt text): an attachment newly in a
product's list counts once.

What it does not know of the real platform: HTTPS (Basic auth is refused over plain HTTP by real
WooCommerce, which wants OAuth 1.0a there), WordPress's image sizes and -scaled copies, file-name
suffixes for duplicates, pagination, product variations' images, webhooks sent by itself (the
tests build the product.updated body from its state with `product_webhook`).
"""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import json
import re
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from urllib.parse import parse_qs

import httpx

from . import Server


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat(timespec="seconds")


@dataclass
class Attachment:
    id: int
    filename: str
    data: bytes
    alt: str = ""
    title: str = ""
    date: str = field(default_factory=_now)


@dataclass
class Product:
    id: int
    name: str
    images: list[int] = field(default_factory=list)  # attachment ids, the featured one first
    date_modified_gmt: str = field(default_factory=_now)


class WooCommerceStandIn(Server):
    def __init__(self, *, consumer_key: str = "ck_standin", consumer_secret: str = "cs_standin",
                 wp_user: str = "studio", app_password: str = "abcd efgh ijkl mnop qrst uvwx"):
        self.consumer = (consumer_key, consumer_secret)
        self.wp_login = (wp_user, app_password.replace(" ", ""))
        self.products: dict[int, Product] = {}
        self.media: dict[int, Attachment] = {}
        self.lock = threading.RLock()
        self.ids = itertools.count(701)
        self.attached: dict[int, Counter[str]] = defaultdict(Counter)
        self.requests: Counter[str] = Counter()
        self.throttle_once: set[str] = set()
        self.fail_once: dict[str, str] = {}
        self.refuse_next = False
        self.wait_until = 0.0
        self.too_soon = 0
        self.bad_auth = 0
        super().__init__()

    # --- the test's side ------------------------------------------------------------------------

    def add_product(self, pid: int, name: str, images: list[tuple[str, bytes]] = ()) -> Product:
        with self.lock:
            p = self.products[pid] = Product(pid, name)
            for n, (alt, data) in enumerate(images):
                p.images.append(self._attachment(f"original-{n + 1}.jpg", data, alt, f"original-{n + 1}").id)
            return p

    def with_alt(self, pid: int, text: str) -> list[Attachment]:
        with self.lock:
            return [self.media[i] for i in self.products[pid].images if text in self.media[i].alt]

    def source_url(self, a: Attachment) -> str:
        return f"{self.base}/wp-content/uploads/2026/12/{a.filename}"

    def product_doc(self, p: Product) -> dict:
        return {"id": p.id, "name": p.name, "date_modified_gmt": p.date_modified_gmt,
                "categories": [{"id": 9, "name": "Mugs", "slug": "mugs"}],
                "images": [{"id": a.id, "date_created_gmt": a.date, "date_modified_gmt": a.date,
                            "src": self.source_url(a), "name": a.title, "alt": a.alt}
                           for a in (self.media[i] for i in p.images)]}

    def product_webhook(self, pid: int) -> bytes:
        """The product.updated body WooCommerce sends (the product as the REST API shows it)."""
        with self.lock:
            return json.dumps(self.product_doc(self.products[pid])).encode()

    # --- the APIs ---------------------------------------------------------------------------------

    def _attachment(self, filename: str, data: bytes, alt: str, title: str) -> Attachment:
        a = Attachment(next(self.ids), filename, data, alt, title)
        self.media[a.id] = a
        return a

    def _basic(self, headers) -> tuple[str, str] | None:
        auth = headers.get("Authorization") or ""
        if not auth.startswith("Basic "):
            return None
        try:
            user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
        except ValueError:
            return None
        return user, password

    def answer(self, method, raw_path, headers, body):
        path, _, query = raw_path.partition("?")
        params = {k: v[0] for k, v in parse_qs(query).items()}
        if method == "GET" and path.startswith("/wp-content/uploads/"):
            with self.lock:
                a = next((x for x in self.media.values() if self.source_url(x).endswith(path)), None)
            return (200, a.data, {}, "image/jpeg") if a else (404, b"", {}, "text/html")
        now = time.monotonic()
        with self.lock:
            self.requests[f"{method} {path}"] += 1
            if now < self.wait_until:
                self.too_soon += 1
            if method in self.throttle_once:
                self.throttle_once.discard(method)
                self.wait_until = now + 1.0
                return 429, {"code": "too_many_requests", "message": "Too many requests.", "data": {"status": 429}}, \
                    {"Retry-After": "1"}, "application/json"
            fault = self.fail_once.pop(method, None)
        if fault == "before":
            return 502, b"<html>502 Bad Gateway</html>", {}, "text/html"
        if path.startswith("/wp-json/wc/v3/"):
            login = self._basic(headers) or (params.get("consumer_key"), params.get("consumer_secret"))
            if tuple(login) != self.consumer:
                self.bad_auth += 1
                return 401, {"code": "woocommerce_rest_cannot_view", "message": "Sorry, you cannot list resources.",
                             "data": {"status": 401}}, {}, "application/json"
            status, doc = self._wc(method, path.removeprefix("/wp-json/wc/v3"), body)
        elif path.startswith("/wp-json/wp/v2/"):
            login = self._basic(headers)
            if login is None or (login[0], login[1].replace(" ", "")) != self.wp_login:
                self.bad_auth += 1
                return 401, {"code": "rest_not_logged_in", "message": "You are not currently logged in.",
                             "data": {"status": 401}}, {}, "application/json"
            status, doc = self._wp(method, path.removeprefix("/wp-json/wp/v2"), params, headers, body)
        else:
            return 404, {"code": "rest_no_route", "message": "No route was found matching the URL and request method.",
                         "data": {"status": 404}}, {}, "application/json"
        if fault == "after":
            return 502, b"<html>502 Bad Gateway</html>", {}, "text/html"
        return status, doc, {}, "application/json"

    def _wp(self, method, path, params, headers, body):
        if path != "/media":
            return 404, {"code": "rest_no_route", "message": "No route.", "data": {"status": 404}}
        with self.lock:
            if method == "GET":
                term = params.get("search", "")
                found = [a for a in self.media.values() if term and term in a.title]
                return 200, [self._media_doc(a) for a in found]
            if method != "POST":
                return 404, {"code": "rest_no_route", "message": "No route.", "data": {"status": 404}}
            m = re.search(r'filename="?([^";]+)"?', headers.get("Content-Disposition") or "")
            if not m:
                return 400, {"code": "rest_upload_no_content_disposition", "message": "No Content-Disposition "
                             "supplied.", "data": {"status": 400}}
            if not (headers.get("Content-Type") or "").startswith("image/") or \
                    not body.startswith((b"\xff\xd8", b"\x89PNG")):
                return 400, {"code": "rest_upload_sideload_error", "message": "Sorry, you are not allowed to upload "
                             "this file type.", "data": {"status": 400}}
            a = self._attachment(m.group(1), body, params.get("alt_text", ""), params.get("title", m.group(1)))
            return 201, self._media_doc(a)

    def _media_doc(self, a: Attachment) -> dict:
        return {"id": a.id, "date_gmt": a.date, "source_url": self.source_url(a), "alt_text": a.alt,
                "media_type": "image", "mime_type": "image/jpeg", "title": {"rendered": a.title}}

    def _wc(self, method, path, body):
        m = re.fullmatch(r"/products/(\d+)", path)
        if not m:
            return 404, {"code": "rest_no_route", "message": "No route.", "data": {"status": 404}}
        with self.lock:
            p = self.products.get(int(m.group(1)))
            if p is None:
                return 404, {"code": "woocommerce_rest_product_invalid_id", "message": "Invalid ID.",
                             "data": {"status": 404}}
            if method == "GET":
                return 200, self.product_doc(p)
            if method not in ("PUT", "POST"):
                return 404, {"code": "rest_no_route", "message": "No route.", "data": {"status": 404}}
            try:
                images = json.loads(body)["images"]
                assert isinstance(images, list)
            except (ValueError, KeyError, AssertionError):
                return 400, {"code": "rest_invalid_param", "message": "Invalid parameter(s): images",
                             "data": {"status": 400}}
            if self.refuse_next:
                self.refuse_next = False
                return 400, {"code": "woocommerce_product_image_upload_error", "message": "Error getting remote "
                             "image: the image is too large.", "data": {"status": 400}}
            ids = []
            for item in images:
                if item.get("id"):
                    a = self.media.get(int(item["id"]))
                    if a is None:
                        return 400, {"code": "woocommerce_product_invalid_image_id",
                                     "message": f"#{item['id']} is an invalid image ID.", "data": {"status": 400}}
                elif item.get("src"):
                    try:  # WooCommerce sideloads the URL into the media library
                        got = httpx.get(item["src"], timeout=10)
                    except httpx.HTTPError as exc:
                        got = None
                        why = type(exc).__name__
                    if got is None or got.status_code != 200 or not got.content.startswith(b"\xff\xd8"):
                        why = why if got is None else f"HTTP {got.status_code}"
                        return 400, {"code": "woocommerce_product_image_upload_error",
                                     "message": f"Error getting remote image {item['src']}. Error: {why}",
                                     "data": {"status": 400}}
                    a = self._attachment(item["src"].split("?")[0].rsplit("/", 1)[-1] or "image.jpg", got.content,
                                         "", "")
                else:
                    return 400, {"code": "rest_invalid_param", "message": "Invalid parameter(s): images",
                                 "data": {"status": 400}}
                if "alt" in item:
                    a.alt = item["alt"]
                if item.get("name"):
                    a.title = item["name"]
                ids.append(a.id)
            for i in ids:
                if i not in p.images:
                    self.attached[p.id][self.media[i].alt] += 1
            p.images = ids
            p.date_modified_gmt = _now()
            return 200, self.product_doc(p)
