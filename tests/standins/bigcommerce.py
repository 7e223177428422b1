"""A stand-in for BigCommerce's catalog API v3 (products and their images), on loopback.

What it checks, as BigCommerce's API reference documents it:
- paths /stores/<hash>/v3/catalog/products/<id>[?include=images] and .../images[/<image id>] for
  the one store hash it serves (another: 404), the header X-Auth-Token (else 401);
- creating an image: multipart/form-data with `image_file` (a file with a name, an image media
  type, at most 8 MB, JPEG or PNG bytes: else 422 with BigCommerce's title and errors), and the
  form fields is_thumbnail (true/false), sort_order (an integer), description; answers
  {"data": image} with an id, image_file, url_zoom/url_standard, date_modified;
- PUT is_thumbnail/sort_order (one thumbnail per product), DELETE (204);
- faults on demand: `throttle_once` answers one method 429 with X-Rate-Limit-Time-Reset-Ms and
  counts requests sent before that wait was over (`too_soon`); `fail_once` answers one method
  502 before or after doing it; `refuse_next` answers the next image creation 422.

It counts the images attached to each product by description (`attached`), not requests, and
bumps the product's date_modified on every image change (what a store/product/updated webhook
then points at).

What it does not know of the real platform: rate-limit windows and quotas (only the header of
one 429), image resizing (url_zoom is the uploaded file), image_url downloads, variants' images,
pagination beyond 250 images, the control panel.
"""

from __future__ import annotations

import datetime as dt
import email.parser
import email.policy
import itertools
import json
import re
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from . import Server

MAX_FILE = 8 * 1024 * 1024


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@dataclass
class Product:
    id: int
    name: str
    images: list[dict] = field(default_factory=list)
    date_modified: str = field(default_factory=_now)


class BigCommerceStandIn(Server):
    def __init__(self, *, store_hash: str = "abc123", token: str = "bc-standin-token"):
        self.store_hash, self.token = store_hash, token
        self.products: dict[int, Product] = {}
        self.blobs: dict[int, bytes] = {}
        self.lock = threading.RLock()
        self.ids = itertools.count(501)
        self.attached: dict[int, Counter[str]] = defaultdict(Counter)
        self.requests: Counter[str] = Counter()  # "METHOD kind" -> count
        self.throttle_once: set[str] = set()  # methods
        self.fail_once: dict[str, str] = {}  # method -> "before" | "after"
        self.refuse_next = False
        self.reset_at = 0.0
        self.too_soon = 0
        self.bad_tokens = 0
        super().__init__()

    def answer(self, method, raw_path, headers, body):
        path, _, query = raw_path.partition("?")
        if path.startswith("/cdn/"):
            data = self.blobs.get(int(path.split("/")[-2])) if method == "GET" else None
            return 200 if data else 404, data or b"", {}, "image/jpeg"
        status, doc, extra = self._api(method, path, query, headers, body)
        return status, b"" if doc is None else doc, extra or {}, "application/json"

    # --- the test's side ------------------------------------------------------------------------

    def add_product(self, pid: int, name: str, images: list[tuple[str, bytes]] = ()) -> Product:
        with self.lock:
            p = self.products[pid] = Product(pid, name)
            for n, (description, data) in enumerate(images):
                self._add_image(p, f"original-{n + 1}.jpg", data, description, n == 0, n)
            return p

    def with_description(self, pid: int, text: str) -> list[dict]:
        with self.lock:
            return [i for i in self.products[pid].images if text in (i["description"] or "")]

    # --- the API ----------------------------------------------------------------------------------

    def _add_image(self, p: Product, filename: str, data: bytes, description: str, thumb: bool, order: int) -> dict:
        iid = next(self.ids)
        stem = re.sub(r"\.[a-z]+$", "", filename)
        url = f"{self.base}/cdn/s-{self.store_hash}/products/{p.id}/images/{iid}/{stem}__{iid}.jpg"
        if thumb:
            for other in p.images:
                other["is_thumbnail"] = False
        img = {"id": iid, "product_id": p.id, "is_thumbnail": thumb, "sort_order": order, "description": description,
               "image_file": f"{stem[0]}/{iid % 1000}/{stem}__{iid}.jpg", "url_zoom": url, "url_standard": url,
               "url_thumbnail": url, "url_tiny": url, "date_modified": _now()}
        p.images.append(img)
        self.blobs[iid] = data
        p.date_modified = _now()
        return img

    def _api(self, method, path, query, headers, body) -> tuple[int, dict | None, dict]:
        m = re.fullmatch(r"/stores/([^/]+)/v3/catalog/products/(\d+)(/images(?:/(\d+))?)?", path)
        if not m or m.group(1) != self.store_hash:
            return 404, {"status": 404, "title": "Not Found"}, {}
        if headers.get("X-Auth-Token") != self.token:
            self.bad_tokens += 1
            return 401, {"status": 401, "title": "Unauthorized"}, {}
        now = time.monotonic()
        with self.lock:
            self.requests[f"{method} {'image' if m.group(3) else 'product'}"] += 1
            if now < self.reset_at:
                self.too_soon += 1
            if method in self.throttle_once:
                self.throttle_once.discard(method)
                self.reset_at = now + 0.3
                return 429, {"status": 429, "title": "Too many requests"}, {
                    "X-Rate-Limit-Time-Reset-Ms": "300", "X-Rate-Limit-Requests-Left": "0",
                    "X-Rate-Limit-Time-Window-Ms": "30000", "X-Rate-Limit-Requests-Quota": "150"}
            fault = self.fail_once.pop(method, None)
            if fault == "before":
                return 502, {"status": 502, "title": "Bad Gateway"}, {}
            answer = self._do(method, int(m.group(2)), m.group(3), m.group(4), query, headers, body)
            if fault == "after":
                return 502, {"status": 502, "title": "Bad Gateway"}, {}
            return answer

    def _do(self, method, pid, images_part, image_id, query, headers, body) -> tuple[int, dict | None, dict]:
        p = self.products.get(pid)
        if p is None:
            return 404, {"status": 404, "title": "The requested product was not found."}, {}
        ordered = sorted(p.images, key=lambda i: (not i["is_thumbnail"], i["sort_order"], i["id"]))
        if not images_part:
            if method != "GET":
                return 405, {"status": 405, "title": "Method Not Allowed"}, {}
            doc = {"id": p.id, "name": p.name, "type": "physical", "date_modified": p.date_modified}
            if "include=images" in query:
                doc["images"] = ordered
            return 200, {"data": doc, "meta": {}}, {}
        if image_id is None:
            if method == "GET":
                return 200, {"data": ordered, "meta": {"pagination": {"total": len(ordered), "count": len(ordered),
                                                                      "per_page": 250, "current_page": 1,
                                                                      "total_pages": 1}}}, {}
            if method == "POST":
                return self._create(p, headers, body)
            return 405, {"status": 405, "title": "Method Not Allowed"}, {}
        img = next((i for i in p.images if i["id"] == int(image_id)), None)
        if img is None:
            return 404, {"status": 404, "title": "The requested image was not found."}, {}
        if method == "DELETE":
            p.images.remove(img)
            p.date_modified = _now()
            return 204, None, {}
        if method == "PUT":
            try:
                changes = json.loads(body)
            except ValueError:
                return 400, {"status": 400, "title": "Input is invalid"}, {}
            if changes.get("is_thumbnail") is True:
                for other in p.images:
                    other["is_thumbnail"] = False
                img["is_thumbnail"] = True
            if "sort_order" in changes:
                img["sort_order"] = int(changes["sort_order"])
            img["date_modified"] = p.date_modified = _now()
            return 200, {"data": img, "meta": {}}, {}
        if method == "GET":
            return 200, {"data": img, "meta": {}}, {}
        return 405, {"status": 405, "title": "Method Not Allowed"}, {}

    def _create(self, p: Product, headers, body) -> tuple[int, dict, dict]:
        ctype = headers.get("Content-Type") or ""
        if not ctype.startswith("multipart/form-data"):
            return 422, {"status": 422, "title": "JSON data is missing or invalid",
                         "errors": {"image_file": "must be sent as multipart/form-data"}}, {}
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {ctype}\r\n\r\n".encode() + body)
        parts = {part.get_param("name", header="content-disposition"): part for part in msg.iter_parts()}
        errors = {}
        file_part = parts.get("image_file")
        data = file_part.get_payload(decode=True) if file_part is not None else b""
        filename = file_part.get_filename() if file_part is not None else None
        if file_part is None or not filename:
            errors["image_file"] = "image_file is required and must be a file"
        elif not (file_part.get_content_type() or "").startswith("image/"):
            errors["image_file"] = "the file must be an image"
        elif len(data) > MAX_FILE:
            errors["image_file"] = "the file is larger than 8 MB"
        elif not data.startswith((b"\xff\xd8", b"\x89PNG")):
            errors["image_file"] = "the file is not a valid image"
        fields = {k: v.get_content().strip() for k, v in parts.items() if k != "image_file"}
        if fields.get("is_thumbnail", "false") not in ("true", "false"):
            errors["is_thumbnail"] = "must be a boolean"
        if not re.fullmatch(r"-?\d+", fields.get("sort_order", "0")):
            errors["sort_order"] = "must be an integer"
        if self.refuse_next:
            self.refuse_next = False
            errors["image_file"] = "The product has reached its image limit"
        if errors:
            return 422, {"status": 422, "title": "The request payload is invalid.",
                         "type": "https://developer.bigcommerce.com/api-docs/getting-started/api-status-codes",
                         "errors": errors}, {}
        img = self._add_image(p, filename, data, fields.get("description", ""), fields.get("is_thumbnail") == "true",
                              int(fields.get("sort_order", "0")))
        self.attached[p.id][img["description"]] += 1
        return 200, {"data": img, "meta": {}}, {}
