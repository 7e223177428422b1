"""A stand-in for Shopify's GraphQL Admin API (the part publishing uses), on loopback.

What it checks, as Shopify's API reference documents it:
- the endpoint POST /admin/api/<version>/graphql.json, a supported version (else 404), the header
  X-Shopify-Access-Token (else 401 with Shopify's error body), a JSON body {query, variables};
- every operation is parsed and validated by graphql-core against a schema of the types used
  (Product, Media/MediaImage, StagedUploadInput, CreateMediaInput, ProductUpdateInput, MoveInput,
  FileUpdateInput and their payloads), so a wrong field, argument or enum value is answered with
  GraphQL errors as Shopify answers them (HTTP 200, `errors`);
- stagedUploadsCreate gives a target on this server; the upload must be a multipart POST carrying
  every parameter given, the file last, no access token, and the declared fileSize;
- productUpdate(product:, media:) attaches only a resourceUrl that was uploaded; an unknown
  product, an originalSource that is not one, or alt text over 512 characters are userErrors;
- media are processed asynchronously: UPLOADED, PROCESSING, then READY `ready_after` seconds
  after they were attached (image is null until READY); a file that is not an image ends FAILED
  with mediaErrors;
- productReorderMedia moves, fileUpdate referencesToRemove detaches;
- faults on demand: `throttle_once` answers an operation THROTTLED once (HTTP 200, extensions.cost)
  and counts retries sent before the bucket could have refilled (`too_soon`); `fail_once` answers
  one operation 502, before or after doing it (a gateway error after the work was done).

It counts what is attached to each product (`attached`), not uploads.

What it does not know of the real platform: Shopify's real query costs and bucket sizes (every
operation costs 10), CDN URLs and image transformations, file-name de-duplication, media limits
per product (250), reorder being a background job (moves apply at once here), product variants
and their media, the Files API beyond detaching, webhooks sent by itself (the tests build the
products/update body from its state with `product_webhook`).
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
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from graphql import GraphQLError, build_schema, graphql_sync

from . import Server

VERSIONS = ("2025-10", "2026-01", "2026-04", "2026-07", "2026-10", "unstable")
COST = 10.0

SCHEMA = build_schema("""
scalar URL
scalar UnsignedInt64

interface Node { id: ID! }
interface File { id: ID! alt: String }
interface Media { id: ID! alt: String status: MediaStatus! mediaContentType: MediaContentType!
                  mediaErrors: [MediaError!]! }
enum MediaStatus { UPLOADED PROCESSING READY FAILED }
enum MediaContentType { IMAGE VIDEO EXTERNAL_VIDEO MODEL_3D }
type MediaError { code: String! details: String message: String! }
type Image { url: URL! altText: String width: Int height: Int }
type MediaImageOriginalSource { url: URL fileSize: Int }
type MediaImage implements Media & Node & File {
  id: ID! alt: String status: MediaStatus! mediaContentType: MediaContentType! mediaErrors: [MediaError!]!
  image: Image originalSource: MediaImageOriginalSource mimeType: String
}
type MediaConnection { nodes: [Media!]! }
type Product implements Node { id: ID! title: String! media(first: Int, last: Int, after: String): MediaConnection! }
type Query { product(id: ID!): Product node(id: ID!): Node }

enum StagedUploadTargetGenerateUploadResource { COLLECTION_IMAGE FILE IMAGE MODEL_3D PRODUCT_IMAGE SHOP_IMAGE VIDEO
                                               BULK_MUTATION_VARIABLES RETURN_LABEL URL_REDIRECT_IMPORT }
enum StagedUploadHttpMethodType { POST PUT }
input StagedUploadInput { resource: StagedUploadTargetGenerateUploadResource! filename: String! mimeType: String!
                          httpMethod: StagedUploadHttpMethodType fileSize: UnsignedInt64 }
type StagedUploadParameter { name: String! value: String! }
type StagedMediaUploadTarget { url: URL parameters: [StagedUploadParameter!]! resourceUrl: URL }
type UserError { field: [String!] message: String! }
type MediaUserError { field: [String!] message: String! code: String }
type FilesUserError { field: [String!] message: String! code: String }
type StagedUploadsCreatePayload { stagedTargets: [StagedMediaUploadTarget!] userErrors: [UserError!]! }
input ProductUpdateInput { id: ID title: String descriptionHtml: String }
input CreateMediaInput { originalSource: String! alt: String mediaContentType: MediaContentType! }
type ProductUpdatePayload { product: Product userErrors: [UserError!]! }
input MoveInput { id: ID! newPosition: UnsignedInt64! }
type Job { id: ID! done: Boolean! }
type ProductReorderMediaPayload { job: Job mediaUserErrors: [MediaUserError!]! userErrors: [UserError!]! }
input FileUpdateInput { id: ID! alt: String referencesToAdd: [ID!] referencesToRemove: [ID!] }
type FileUpdatePayload { files: [File!] userErrors: [FilesUserError!]! }
type Mutation {
  stagedUploadsCreate(input: [StagedUploadInput!]!): StagedUploadsCreatePayload
  productUpdate(product: ProductUpdateInput, media: [CreateMediaInput!]): ProductUpdatePayload
  productReorderMedia(id: ID!, moves: [MoveInput!]!): ProductReorderMediaPayload
  fileUpdate(files: [FileUpdateInput!]!): FileUpdatePayload
}
""")

_OPERATION = re.compile(r"\b(stagedUploadsCreate|productUpdate|productReorderMedia|fileUpdate|product|node)\s*\(")


@dataclass
class Media:
    id: int
    alt: str | None
    filename: str
    data: bytes
    attached_at: float
    failed: bool = False
    updated_at: str = field(default_factory=lambda: now_iso())


@dataclass
class Product:
    id: int
    title: str
    media: list[Media] = field(default_factory=list)
    updated_at: str = "2026-11-01T00:00:00Z"


def _numeric(gid: str, kind: str) -> int | None:
    m = re.fullmatch(rf"gid://shopify/{kind}/(\d+)", str(gid))
    return int(m.group(1)) if m else None


class ShopifyStandIn(Server):
    """Products are created with `add_product`; `attached[product id]` counts each mark's
    attachments ever made (the exactly-once evidence)."""

    def __init__(self, *, token: str = "shpat_standin", ready_after: float = 0.6):
        self.token = token
        self.ready_after = ready_after
        self.products: dict[int, Product] = {}
        self.staged: dict[str, dict] = {}
        self.lock = threading.RLock()
        self.ids = itertools.count(31_000_000_001)
        self.requests: Counter[str] = Counter()  # operation -> GraphQL requests received
        self.attached: dict[int, Counter[str]] = defaultdict(Counter)  # product -> alt -> attachments
        self.max_media: dict[int, int] = defaultdict(lambda: 250)  # Shopify's limit per product
        self.throttle_once: set[str] = set()
        self.fail_once: dict[str, str] = {}  # operation -> "before" | "after"
        self.throttled_until = 0.0
        self.too_soon = 0  # requests sent while the bucket was still empty after a THROTTLED answer
        self.bad_tokens = 0
        self.upload_problems: list[str] = []
        super().__init__()

    def answer(self, method, raw_path, headers, body):
        path = raw_path.split("?", 1)[0]
        if method == "GET":
            m = re.fullmatch(r"/cdn/(\d+)/(.+)", path)
            media = self._media_by_id(int(m.group(1))) if m else None
            return (200, media.data, {}, "image/jpeg") if media else self._json(404, {"errors": "Not Found"})
        if method != "POST":
            return self._json(404, {"errors": "Not Found"})
        if path.startswith("/staged-uploads/"):
            return self._json(*self._upload(path.rsplit("/", 1)[-1], headers, body))
        m = re.fullmatch(r"/admin/api/([^/]+)/graphql\.json", path)
        if not m or m.group(1) not in VERSIONS:
            return self._json(404, {"errors": "Not Found"})
        if headers.get("X-Shopify-Access-Token") != self.token:
            self.bad_tokens += 1
            return self._json(401, {"errors": "[API] Invalid API key or access token (unrecognized login "
                                              "or wrong password)"})
        if not (headers.get("Content-Type") or "").startswith("application/json"):
            return self._json(400, {"errors": "Content-Type must be application/json"})
        return self._json(*self._graphql(body))

    @staticmethod
    def _json(status: int, doc, headers: dict | None = None):
        """An answer as the real Admin API gives it: JSON, or (bytes) the HTML of an error page."""
        return status, doc, headers or {}, "text/html" if isinstance(doc, bytes) else "application/json"

    # --- the test's side ------------------------------------------------------------------------

    def add_product(self, pid: int, title: str = "Coffee cup", images: list[tuple[str, bytes]] = ()) -> Product:
        """A product with existing images (alt, bytes), READY."""
        with self.lock:
            product = Product(pid, title)
            for alt, data in images:
                product.media.append(Media(next(self.ids), alt, f"original-{len(product.media) + 1}.jpg", data,
                                           time.monotonic() - 3600))
            self.products[pid] = product
            return product

    def media_with(self, pid: int, text: str) -> list[Media]:
        with self.lock:
            return [m for m in self.products[pid].media if m.alt and text in m.alt]

    def image_url(self, media: Media) -> str:
        return f"{self.base}/cdn/{media.id}/{media.filename}"

    def product_webhook(self, pid: int, updated_at: str) -> bytes:
        """The products/update body Shopify sends after a change, REST-shaped, with the product's
        images (id, position, alt, src) and media as they are now."""
        with self.lock:
            p = self.products[pid]
            p.updated_at = updated_at
            images = [{"id": m.id, "product_id": pid, "position": n + 1, "alt": m.alt, "src": self.image_url(m),
                       "updated_at": m.updated_at, "admin_graphql_api_id": f"gid://shopify/MediaImage/{m.id}"}
                      for n, m in enumerate(p.media)]
            media = [{"id": m.id, "position": n + 1, "alt": m.alt, "media_content_type": "IMAGE",
                      "preview_image": {"src": self.image_url(m)}} for n, m in enumerate(p.media)]
            return json.dumps({"id": pid, "title": p.title, "product_type": "Kitchen", "updated_at": updated_at,
                               "images": images, "media": media}).encode()

    # --- the API ----------------------------------------------------------------------------------

    def _media_by_id(self, mid: int) -> Media | None:
        with self.lock:
            return next((m for p in self.products.values() for m in p.media if m.id == mid), None)

    def _status(self, m: Media) -> str:
        if m.failed:
            return "FAILED"
        age = time.monotonic() - m.attached_at
        return "READY" if age >= self.ready_after else "PROCESSING" if age >= self.ready_after / 2 else "UPLOADED"

    def _media_doc(self, m: Media) -> dict:
        status = self._status(m)
        return {"__typename": "MediaImage", "id": f"gid://shopify/MediaImage/{m.id}", "alt": m.alt, "status": status,
                "mediaContentType": "IMAGE", "mimeType": "image/jpeg",
                "mediaErrors": [{"code": "UNSUPPORTED_IMAGE_FILE_TYPE", "details": None,
                                 "message": "Image file type is not supported"}] if m.failed else [],
                "image": {"url": self.image_url(m), "altText": m.alt} if status == "READY" else None,
                "originalSource": {"url": f"{self.base}/originals/{m.id}/{m.filename}", "fileSize": len(m.data)}}

    def _product_doc(self, p: Product) -> dict:
        return {"__typename": "Product", "id": f"gid://shopify/Product/{p.id}", "title": p.title,
                "media": lambda info, **_: {"nodes": [self._media_doc(m) for m in p.media]}}

    def _graphql(self, body: bytes) -> tuple[int, dict | bytes]:
        try:
            doc = json.loads(body)
            query, variables = doc["query"], doc.get("variables") or {}
            assert isinstance(query, str) and isinstance(variables, dict)
        except (ValueError, KeyError, AssertionError):
            return 400, {"errors": "Bad Request: the body must be JSON {query, variables}"}
        found = _OPERATION.search(query)
        op = found.group(1) if found else "?"
        now = time.monotonic()
        with self.lock:
            self.requests[op] += 1
            if now < self.throttled_until:
                self.too_soon += 1
            if op in self.throttle_once:
                self.throttle_once.discard(op)
                requested, available, restore = 52.0, 2.0, 100.0
                self.throttled_until = now + (requested - available) / restore
                return 200, {"errors": [{"message": "Throttled", "extensions": {
                    "code": "THROTTLED", "documentation": "https://shopify.dev/api/usage/rate-limits"}}],
                    "extensions": {"cost": {"requestedQueryCost": requested, "actualQueryCost": None,
                                            "throttleStatus": {"maximumAvailable": 2000.0,
                                                               "currentlyAvailable": available,
                                                               "restoreRate": restore}}}}
            fault = self.fail_once.pop(op, None)
        if fault == "before":
            return 502, b"<html><body>502 Bad Gateway</body></html>"
        result = graphql_sync(SCHEMA, query, root_value=_Root(self), variable_values=variables)
        if fault == "after":
            return 502, b"<html><body>502 Bad Gateway</body></html>"
        out: dict = {}
        if result.errors:
            out["errors"] = [_error(e) for e in result.errors]
        if result.data is not None:
            out["data"] = result.data
        out["extensions"] = {"cost": {"requestedQueryCost": COST, "actualQueryCost": COST, "throttleStatus": {
            "maximumAvailable": 2000.0, "currentlyAvailable": 1990.0, "restoreRate": 100.0}}}
        return 200, out

    def _upload(self, token: str, headers, body: bytes) -> tuple[int, dict | bytes]:
        with self.lock:
            target = self.staged.get(token)
        if target is None:
            return 404, b"<Error><Code>NoSuchUpload</Code></Error>"
        problems = []
        if headers.get("X-Shopify-Access-Token"):
            problems.append("the access token was sent to the upload target")
        ctype = headers.get("Content-Type") or ""
        if not ctype.startswith("multipart/form-data"):
            problems.append(f"not multipart/form-data: {ctype}")
            parts = []
        else:
            msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                f"Content-Type: {ctype}\r\n\r\n".encode() + body)
            parts = list(msg.iter_parts())
        names = [p.get_param("name", header="content-disposition") for p in parts]
        fields = {n: p.get_content() for n, p in zip(names, parts) if n != "file"}
        for name, value in target["parameters"].items():
            if fields.get(name) != value:
                problems.append(f"parameter {name} missing or changed")
        if not names or names[-1] != "file":
            problems.append("the file is not the last field")
        data = parts[-1].get_payload(decode=True) if parts else b""
        if target["fileSize"] is not None and len(data) != int(target["fileSize"]):
            problems.append(f"fileSize {target['fileSize']} declared, {len(data)} sent")
        if problems:
            with self.lock:
                self.upload_problems += problems
            return 400, b"<Error><Code>InvalidArgument</Code><Message>" + "; ".join(problems).encode() + b"</Message></Error>"
        with self.lock:
            target["data"] = data
        return 201, b"<PostResponse><Location>ok</Location></PostResponse>"


def _error(e: GraphQLError) -> dict:
    out = {"message": e.message}
    if e.locations:
        out["locations"] = [{"line": loc.line, "column": loc.column} for loc in e.locations]
    if e.path:
        out["path"] = list(e.path)
    return out


class _Root:
    """Resolvers of the Query and Mutation fields (graphql-core calls a root attribute with
    (info, **arguments))."""

    def __init__(self, shop: ShopifyStandIn):
        self.shop = shop

    def product(self, info, id):  # noqa: A002 - the argument's name
        pid = _numeric(id, "Product")
        with self.shop.lock:
            p = self.shop.products.get(pid) if pid is not None else None
            return self.shop._product_doc(p) if p else None

    def node(self, info, id):  # noqa: A002
        mid = _numeric(id, "MediaImage")
        m = self.shop._media_by_id(mid) if mid is not None else None
        return self.shop._media_doc(m) if m else None

    def stagedUploadsCreate(self, info, input):  # noqa: A002, N802
        targets, errors = [], []
        for n, item in enumerate(input):
            if item["resource"] == "IMAGE" and not item["mimeType"].startswith("image/"):
                errors.append({"field": ["input", str(n), "mimeType"], "message": "Invalid MIME type for IMAGE"})
                continue
            if item.get("httpMethod", "PUT") != "POST":
                errors.append({"field": ["input", str(n), "httpMethod"], "message": "this stand-in serves POST only"})
                continue
            token = uuid.uuid4().hex
            key = f"tmp/67890/products/{token}/{item['filename']}"
            params = {"Content-Type": item["mimeType"], "success_action_status": "201", "acl": "private", "key": key,
                      "x-goog-date": "20261203T000000Z", "x-goog-credential": "standin/20261203/auto/storage",
                      "x-goog-algorithm": "GOOG4-RSA-SHA256", "x-goog-signature": uuid.uuid4().hex,
                      "policy": uuid.uuid4().hex}
            resource = f"{self.shop.base}/staged-uploads/{token}/{item['filename']}"
            with self.shop.lock:
                self.shop.staged[token] = {"parameters": params, "fileSize": item.get("fileSize"), "data": None,
                                           "filename": item["filename"], "resourceUrl": resource}
            targets.append({"url": f"{self.shop.base}/staged-uploads/{token}", "resourceUrl": resource,
                            "parameters": [{"name": k, "value": v} for k, v in params.items()]})
        return {"stagedTargets": targets, "userErrors": errors}

    def productUpdate(self, info, product=None, media=None):  # noqa: N802
        shop = self.shop
        pid = _numeric((product or {}).get("id", ""), "Product")
        with shop.lock:
            p = shop.products.get(pid) if pid is not None else None
            if p is None:
                return {"product": None, "userErrors": [{"field": ["id"], "message": "Product does not exist"}]}
            errors, new = [], []
            for n, item in enumerate(media or ()):
                target = next((t for t in shop.staged.values() if t["resourceUrl"] == item["originalSource"]), None)
                if target is None or target["data"] is None:
                    errors.append({"field": ["media", str(n), "originalSource"], "message": "Image URL is invalid"})
                elif item.get("alt") and len(item["alt"]) > 512:
                    errors.append({"field": ["media", str(n), "alt"],
                                   "message": "Alt is too long (maximum is 512 characters)"})
                else:
                    new.append(Media(next(shop.ids), item.get("alt"), target["filename"], target["data"],
                                     time.monotonic(), failed=not target["data"].startswith(b"\xff\xd8")))
            if len(p.media) + len(new) > shop.max_media[pid]:
                errors.append({"field": ["media"], "message": f"Exceeded maximum number of media "
                                                              f"({shop.max_media[pid]}) for product"})
            if errors:  # nothing is attached when any media is refused
                return {"product": shop._product_doc(p), "userErrors": errors}
            for m in new:
                p.media.append(m)
                shop.attached[pid][m.alt or ""] += 1
            return {"product": shop._product_doc(p), "userErrors": []}

    def productReorderMedia(self, info, id, moves):  # noqa: A002, N802
        shop = self.shop
        pid = _numeric(id, "Product")
        with shop.lock:
            p = shop.products.get(pid) if pid is not None else None
            if p is None:
                return {"job": None, "mediaUserErrors": [{"field": ["id"], "message": "Product does not exist",
                                                          "code": "PRODUCT_DOES_NOT_EXIST"}], "userErrors": []}
            for move in moves:
                mid = _numeric(move["id"], "MediaImage")
                m = next((x for x in p.media if x.id == mid), None)
                if m is None:
                    return {"job": None, "mediaUserErrors": [{"field": ["moves", "id"], "message": "Media does not "
                                                              "exist", "code": "MEDIA_DOES_NOT_EXIST"}],
                            "userErrors": []}
                p.media.remove(m)
                p.media.insert(min(int(move["newPosition"]), len(p.media)), m)
            return {"job": {"id": f"gid://shopify/Job/{uuid.uuid4()}", "done": False}, "mediaUserErrors": [],
                    "userErrors": []}

    def fileUpdate(self, info, files):  # noqa: N802
        shop = self.shop
        out, errors = [], []
        with shop.lock:
            for n, f in enumerate(files):
                mid = _numeric(f["id"], "MediaImage")
                m = shop._media_by_id(mid) if mid is not None else None
                if m is None:
                    errors.append({"field": ["files", str(n), "id"], "message": "File does not exist",
                                   "code": "FILE_DOES_NOT_EXIST"})
                    continue
                for ref in f.get("referencesToRemove") or ():
                    p = shop.products.get(_numeric(ref, "Product"))
                    if p is not None and m in p.media:
                        p.media.remove(m)
                out.append(shop._media_doc(m))
        return {"files": out, "userErrors": errors}


def now_iso(offset: float = 0) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=offset)).isoformat(timespec="seconds")
