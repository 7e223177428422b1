"""Shopify: images onto a product through the GraphQL Admin API (an Admin API access token with the
scope `write_products`; the API version is the store's `api_version`, else
PRODUCT_STUDIO_SHOPIFY_API_VERSION).

The requests, as the API reference documents them today:

1. `stagedUploadsCreate` (resource IMAGE, httpMethod POST) gives an upload target; the file is
   POSTed there as multipart form data, the target's parameters first and the file last
   (https://shopify.dev/docs/api/admin-graphql/latest/mutations/stagedUploadsCreate,
   https://shopify.dev/docs/apps/build/online-store/product-media).
2. `productUpdate(product: {id}, media: [CreateMediaInput])` attaches it: `originalSource` is the
   target's resourceUrl, `alt`, `mediaContentType: IMAGE` (productCreateMedia is deprecated)
   (https://shopify.dev/docs/api/admin-graphql/latest/mutations/productUpdate,
   https://shopify.dev/docs/api/admin-graphql/latest/input-objects/CreateMediaInput).
3. Processing is asynchronous: the media is polled (`node(id:)`) until its status is READY, or
   FAILED with its mediaErrors (https://shopify.dev/docs/api/admin-graphql/latest/objects/MediaImage).
4. `productReorderMedia` puts a main image first
   (https://shopify.dev/docs/api/admin-graphql/latest/mutations/productReorderMedia); `fileUpdate`
   with `referencesToRemove` takes an image off the product
   (https://shopify.dev/docs/api/admin-graphql/latest/mutations/fileUpdate).

Errors come back as `userErrors` / `mediaUserErrors` (Rejected, with Shopify's messages). A
throttled request is answered HTTP 200 with an error whose extensions.code is THROTTLED and the
query cost in extensions.cost; it was not run, and is sent again once the bucket has refilled
enough: (requestedQueryCost - currentlyAvailable) / restoreRate seconds
(https://shopify.dev/docs/api/usage/limits#graphql-admin-api-rate-limits).
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from .base import Image, Publisher, Rejected, Remote
from .http import Api, standard_wait

MEDIA_PAGE = 250  # the most media one connection page returns

_MEDIA_FIELDS = """
  id alt status mediaContentType
  mediaErrors { code message }
  ... on MediaImage { image { url } originalSource { url } }
"""
PRODUCT_MEDIA = """
query ProductMedia($id: ID!) {
  product(id: $id) { id media(first: %d) { nodes { %s } } }
}""" % (MEDIA_PAGE, _MEDIA_FIELDS)
MEDIA_NODE = """
query MediaNode($id: ID!) { node(id: $id) { ... on Media { %s } } }""" % _MEDIA_FIELDS
STAGED_UPLOADS_CREATE = """
mutation StagedUploadsCreate($input: [StagedUploadInput!]!) {
  stagedUploadsCreate(input: $input) {
    stagedTargets { url resourceUrl parameters { name value } }
    userErrors { field message }
  }
}"""
PRODUCT_UPDATE = """
mutation ProductUpdateMedia($product: ProductUpdateInput!, $media: [CreateMediaInput!]) {
  productUpdate(product: $product, media: $media) {
    product { id media(first: %d) { nodes { %s } } }
    userErrors { field message }
  }
}""" % (MEDIA_PAGE, _MEDIA_FIELDS)
PRODUCT_REORDER_MEDIA = """
mutation ProductReorderMedia($id: ID!, $moves: [MoveInput!]!) {
  productReorderMedia(id: $id, moves: $moves) {
    job { id done }
    mediaUserErrors { field message }
  }
}"""
FILE_UPDATE = """
mutation FileUpdate($files: [FileUpdateInput!]!) {
  fileUpdate(files: $files) {
    files { id }
    userErrors { field message code }
  }
}"""


def gid(kind: str, value: str) -> str:
    """A Shopify global id: "7001" -> "gid://shopify/Product/7001" (a gid is kept as it is)."""
    return value if value.startswith("gid://") else f"gid://shopify/{kind}/{value}"


def numeric(value: str) -> str:
    """The number at the end of a global id (what the REST-shaped webhooks carry)."""
    return value.rsplit("/", 1)[-1]


def throttled(response: httpx.Response) -> float | None:
    """Seconds to wait when Shopify throttled this request (HTTP 200 with a THROTTLED error, or a
    429); None when it was run."""
    if response.status_code == 429:
        return standard_wait(response)
    if response.status_code != 200 or b"THROTTLED" not in response.content:
        return None
    try:
        doc = response.json()
    except ValueError:
        return None
    errors = doc.get("errors") if isinstance(doc, dict) else None
    if not isinstance(errors, list) or not any(
            isinstance(e, dict) and (e.get("extensions") or {}).get("code") == "THROTTLED" for e in errors):
        return None
    cost = ((doc.get("extensions") or {}).get("cost") or {})
    status = cost.get("throttleStatus") or {}
    try:
        needed = float(cost.get("requestedQueryCost") or 0) - float(status.get("currentlyAvailable") or 0)
        rate = float(status.get("restoreRate") or 0)
    except (TypeError, ValueError):
        return 1.0
    return max(0.05, needed / rate) if rate > 0 else 1.0


def _remote(node: dict, position: int) -> Remote:
    image = node.get("image") or {}
    original = node.get("originalSource") or {}
    return Remote(id=str(node["id"]), position=position, alt=node.get("alt"), url=image.get("url"),
                  filename=original.get("url"), ready=node.get("status") == "READY")


def _images(nodes: list[dict]) -> list[Remote]:
    return [_remote(n, i) for i, n in enumerate(nodes) if isinstance(n, dict) and n.get("id")]


def _user_errors(payload: dict, what: str, *fields: str) -> None:
    problems = []
    for name in fields:
        for e in payload.get(name) or ():
            field = ".".join(str(f) for f in e.get("field") or ()) if isinstance(e, dict) else ""
            message = e.get("message") if isinstance(e, dict) else str(e)
            problems.append(f"{field}: {message}" if field else str(message))
    if problems:
        raise Rejected(f"shopify {what}: " + "; ".join(problems)[:1000])


class Shopify(Publisher):
    """The GraphQL Admin API at <api_url>/admin/api/<version>/graphql.json, with the header
    X-Shopify-Access-Token. Raises Rejected at once when the store lacks a token or a shop."""

    platform = "shopify"

    def __init__(self, store: Any, settings: Any):
        super().__init__(store, settings)
        base = store.api_url or (f"https://{store.source}" if store.source else None)
        if base is None:
            raise Rejected(f"shopify store {store.name!r}: no shop domain to publish to (source in the stores file, "
                           "or PRODUCT_STUDIO_SHOPIFY_SHOP)")
        if store.api_token is None:
            raise Rejected(f"shopify store {store.name!r}: no Admin API access token (api_token in the stores file, "
                           "or PRODUCT_STUDIO_SHOPIFY_ACCESS_TOKEN)")
        self.version = store.api_version or settings.shopify_api_version
        self.shop = store.source
        self.api = Api("Shopify", base, {"X-Shopify-Access-Token": store.api_token.get_secret_value(),
                                         "Accept": "application/json"},
                       timeout=settings.publish_timeout, secrets=store.credentials(), throttle=throttled)
        self.endpoint = f"/admin/api/{self.version}/graphql.json"

    def close(self) -> None:
        self.api.close()

    def graphql(self, query: str, variables: dict, *, what: str, idempotent: bool) -> dict:
        """Run one GraphQL operation; its `data`. Top-level errors (other than THROTTLED, which
        the client waits out) are Rejected with Shopify's messages."""
        r = self.api.request("POST", self.endpoint, json={"query": query, "variables": variables},
                             what=f"shopify {what}", idempotent=idempotent)
        if r.status_code == 404:
            raise Rejected(f"shopify {what}: no Admin API at {self.endpoint} (is API version {self.version} "
                           "supported, and the shop domain right?)")
        try:
            doc = r.json()
        except ValueError:
            raise Rejected(f"shopify {what}: the answer is not JSON") from None
        errors = doc.get("errors") if isinstance(doc, dict) else None
        if errors:
            messages = "; ".join(str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in errors)
            raise Rejected(self.api.redact(f"shopify {what}: {messages}"[:1000]))
        data = doc.get("data") if isinstance(doc, dict) else None
        if not isinstance(data, dict):
            raise Rejected(f"shopify {what}: the answer has no data")
        return data

    def images(self, product_id: str) -> list[Remote]:
        data = self.graphql(PRODUCT_MEDIA, {"id": gid("Product", product_id)}, what="product media",
                            idempotent=True)
        product = data.get("product")
        if not product:
            raise Rejected(f"shopify: the shop has no product {product_id} (deleted since?)")
        return _images((product.get("media") or {}).get("nodes") or [])

    def attach(self, product_id: str, image: Image) -> Remote:
        data = self.graphql(STAGED_UPLOADS_CREATE, {"input": [{
            "resource": "IMAGE", "filename": image.filename, "mimeType": image.content_type,
            "httpMethod": "POST", "fileSize": str(len(image.data))}]}, what="stagedUploadsCreate", idempotent=True)
        payload = data.get("stagedUploadsCreate") or {}
        _user_errors(payload, "stagedUploadsCreate", "userErrors")
        [target] = payload.get("stagedTargets") or [None]
        if not target or not target.get("url") or not target.get("resourceUrl"):
            raise Rejected("shopify stagedUploadsCreate: no upload target in the answer")
        fields = {p["name"]: p["value"] for p in target.get("parameters") or ()}
        # The staged target is a storage bucket, not the Admin API: no access token goes there.
        with Api("Shopify's upload target", target["url"], {}, timeout=self.settings.publish_timeout,
                 secrets=self.api.secrets) as bucket:
            bucket.request("POST", target["url"], data=fields, files={"file": (image.filename, image.data,
                                                                               image.content_type)},
                           what="shopify staged upload", idempotent=True)
        media = [{"originalSource": target["resourceUrl"], "alt": image.alt, "mediaContentType": "IMAGE"}]
        data = self.graphql(PRODUCT_UPDATE, {"product": {"id": gid("Product", product_id)}, "media": media},
                            what="productUpdate", idempotent=False)
        payload = data.get("productUpdate") or {}
        _user_errors(payload, "productUpdate", "userErrors", "mediaUserErrors")
        nodes = ((payload.get("product") or {}).get("media") or {}).get("nodes") or []
        mine = [r for r in _images(nodes) if r.carries(image.mark)]
        if not mine:  # attached, but not listed yet: the next read finds it
            mine = [r for r in self.images(product_id) if r.carries(image.mark)]
        if not mine:
            raise Rejected(f"shopify productUpdate: the product does not list the new image {image.mark}")
        return mine[-1]

    def wait_ready(self, product_id: str, remote: Remote) -> Remote:
        from ..errors import TransientError

        deadline = time.monotonic() + self.settings.publish_media_wait
        pause = 0.2
        while not remote.ready:
            data = self.graphql(MEDIA_NODE, {"id": remote.id}, what="media status", idempotent=True)
            node = data.get("node")
            if not node:
                raise Rejected(f"shopify: media {remote.id} is gone")
            if node.get("status") == "FAILED":
                errors = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in node.get("mediaErrors") or ())
                raise Rejected(f"shopify: processing the image failed: {errors or 'no reason given'}")
            remote = Remote(remote.id, remote.position, node.get("alt"), (node.get("image") or {}).get("url"),
                            (node.get("originalSource") or {}).get("url"), node.get("status") == "READY")
            if remote.ready:
                break
            if time.monotonic() > deadline:
                raise TransientError(f"shopify: media {remote.id} not READY after "
                                     f"{self.settings.publish_media_wait:.0f} s")
            time.sleep(pause)
            pause = min(pause * 2, 5.0)
        return remote

    def make_first(self, product_id: str, remote: Remote) -> None:
        data = self.graphql(PRODUCT_REORDER_MEDIA, {"id": gid("Product", product_id),
                                                    "moves": [{"id": remote.id, "newPosition": "0"}]},
                            what="productReorderMedia", idempotent=True)
        _user_errors(data.get("productReorderMedia") or {}, "productReorderMedia", "mediaUserErrors", "userErrors")

    def detach(self, product_id: str, remote_id: str) -> None:
        data = self.graphql(FILE_UPDATE, {"files": [{"id": gid("MediaImage", remote_id),
                                                     "referencesToRemove": [gid("Product", product_id)]}]},
                            what="fileUpdate", idempotent=True)
        _user_errors(data.get("fileUpdate") or {}, "fileUpdate", "userErrors")

    def admin_url(self, product_id: str) -> str | None:
        return f"https://{self.shop}/admin/products/{numeric(product_id)}" if self.shop else None

