"""BigCommerce: images onto a product through the catalog API v3 (a store-level API account's
X-Auth-Token with the scope Products: modify; the store hash is the store's `source`).

The requests, as the API reference documents them today
(https://developer.bigcommerce.com/docs/rest-catalog/products/images):

- GET    /stores/{hash}/v3/catalog/products/{id}/images           the product's images
- POST   /stores/{hash}/v3/catalog/products/{id}/images           multipart: image_file (at most
         8 MB), is_thumbnail, sort_order, description (the alt text)
- PUT    /stores/{hash}/v3/catalog/products/{id}/images/{image}   is_thumbnail / sort_order
- DELETE /stores/{hash}/v3/catalog/products/{id}/images/{image}

The main image is the one flagged is_thumbnail; the others are shown by ascending sort_order.
A 429 carries X-Rate-Limit-Time-Reset-Ms, the wait the client honours
(https://developer.bigcommerce.com/docs/start/best-practices/api-rate-limits); a 422 names the
refused fields (Rejected, with BigCommerce's title and errors).
"""

from __future__ import annotations

import re
from typing import Any

from .base import Image, Publisher, Rejected, Remote
from .http import Api

MAX_FILE = 8 * 1024 * 1024  # image_file's limit
_HASH = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _sorted(images: list[dict]) -> list[dict]:
    return sorted(images, key=lambda i: (not i.get("is_thumbnail"), i.get("sort_order") or 0, i.get("id") or 0))


class BigCommerce(Publisher):
    """The catalog API at <api_url>/stores/<hash>/v3, with the header X-Auth-Token. Raises
    Rejected at once when the store lacks a token or a store hash."""

    platform = "bigcommerce"

    def __init__(self, store: Any, settings: Any):
        super().__init__(store, settings)
        if not store.source or not _HASH.fullmatch(store.source):
            raise Rejected(f"bigcommerce store {store.name!r}: no store hash to publish to (source in the stores "
                           "file, or PRODUCT_STUDIO_BIGCOMMERCE_STORE_HASH)")
        if store.api_token is None:
            raise Rejected(f"bigcommerce store {store.name!r}: no API token (api_token in the stores file, or "
                           "PRODUCT_STUDIO_BIGCOMMERCE_API_TOKEN)")
        self.hash = store.source
        base = (store.api_url or settings.bigcommerce_api_url).rstrip("/")
        self.api = Api("BigCommerce", f"{base}/stores/{self.hash}/v3",
                       {"X-Auth-Token": store.api_token.get_secret_value(), "Accept": "application/json"},
                       timeout=settings.publish_timeout, secrets=store.credentials())

    def close(self) -> None:
        self.api.close()

    def _path(self, product_id: str, image_id: str | None = None) -> str:
        if not product_id.isdigit() or (image_id is not None and not image_id.isdigit()):
            raise Rejected(f"bigcommerce: product {product_id[:40]!r} / image {image_id!r} is not a number")
        return f"/catalog/products/{product_id}/images" + (f"/{image_id}" if image_id else "")

    def _list(self, product_id: str) -> list[dict]:
        r = self.api.request("GET", self._path(product_id), params={"limit": 250}, what="bigcommerce product images",
                             idempotent=True)
        if r.status_code == 404:
            raise Rejected(f"bigcommerce: the store has no product {product_id} (deleted since?)")
        data = r.json().get("data")
        if not isinstance(data, list):
            raise Rejected("bigcommerce product images: the answer has no data list")
        return [i for i in data if isinstance(i, dict) and i.get("id") is not None]

    @staticmethod
    def _remote(img: dict, position: int) -> Remote:
        return Remote(id=str(img["id"]), position=position, alt=img.get("description"),
                      url=img.get("url_zoom") or img.get("url_standard"), filename=img.get("image_file"))

    def images(self, product_id: str) -> list[Remote]:
        return [self._remote(img, n) for n, img in enumerate(_sorted(self._list(product_id)))]

    def attach(self, product_id: str, image: Image) -> Remote:
        if len(image.data) > MAX_FILE:
            raise Rejected(f"bigcommerce: the image is {len(image.data):,} bytes; image_file takes at most "
                           f"{MAX_FILE:,}")
        existing = self._list(product_id)
        order = max((i.get("sort_order") or 0 for i in existing), default=-1) + 1
        r = self.api.request("POST", self._path(product_id), what="bigcommerce create product image",
                             idempotent=False,
                             data={"is_thumbnail": "false", "sort_order": str(order), "description": image.alt},
                             files={"image_file": (image.filename, image.data, image.content_type)})
        if r.status_code == 404:
            raise Rejected(f"bigcommerce: the store has no product {product_id} (deleted since?)")
        created = r.json().get("data") or {}
        if created.get("id") is None:
            raise Rejected("bigcommerce create product image: the answer has no image id")
        listed = self.images(product_id)
        return next((x for x in listed if x.id == str(created["id"])), self._remote(created, len(listed)))

    def make_first(self, product_id: str, remote: Remote) -> None:
        lowest = min((i.get("sort_order") or 0 for i in self._list(product_id)), default=0)
        self.api.request("PUT", self._path(product_id, remote.id), json={"is_thumbnail": True,
                                                                          "sort_order": lowest - 1},
                         what="bigcommerce update product image", idempotent=True)

    def detach(self, product_id: str, remote_id: str) -> None:
        # BigCommerce deletes the image with its file: there is no keeping it aside.
        self.api.request("DELETE", self._path(product_id, remote_id), what="bigcommerce delete product image",
                         idempotent=True)

    def admin_url(self, product_id: str) -> str | None:
        return f"https://store-{self.hash}.mybigcommerce.com/manage/products/edit/{product_id}"
