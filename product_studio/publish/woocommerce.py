"""WooCommerce: images onto a product through the WooCommerce REST API v3, and (the default when
a WordPress application password is set) uploads through the WordPress REST API's media library.

WooCommerce's consumer key and secret authenticate only the `wc/` routes (HTTP Basic over HTTPS,
https://woocommerce.github.io/woocommerce-rest-api-docs/#authentication); the media library
(`/wp/v2/media`) needs a WordPress user's application password
(https://developer.wordpress.org/rest-api/using-the-rest-api/authentication/#basic-authentication-with-application-passwords).
Two ways, the store's `upload`:

- `media`: POST /wp-json/wp/v2/media with the file as the body (Content-Disposition names it;
  alt_text and title as parameters; https://developer.wordpress.org/rest-api/reference/media/#create-a-media-item),
  then the product's images are set to the existing ones plus {id} of the new attachment;
- `url`: the product's images are set to the existing ones plus {src: a signed link}, and
  WooCommerce downloads it (needs PRODUCT_STUDIO_PUBLIC_BASE_URL, and a link that lives
  long enough: PRODUCT_STUDIO_DOWNLOAD_URL_EXPIRES).

PUT /wp-json/wc/v3/products/{id} with `images` replaces the product's whole image list
(https://woocommerce.github.io/woocommerce-rest-api-docs/#update-a-product): the existing images
are sent back by id, in order; the first is the featured image. An attachment uploaded by an
attempt that failed afterwards is found again in the library by its mark (GET /wp/v2/media?search=)
instead of being uploaded twice.
"""

from __future__ import annotations

from typing import Any

from .base import Image, Publisher, Rejected, Remote
from .http import Api


class WooCommerce(Publisher):
    """The REST API at <api_url or https://<source>>/wp-json. Raises Rejected at once when the
    store lacks the consumer key and secret, or the application password its upload way needs."""

    platform = "woocommerce"

    def __init__(self, store: Any, settings: Any):
        super().__init__(store, settings)
        self.site = (store.api_url or (f"https://{store.source}" if store.source else "")).rstrip("/")
        if not self.site:
            raise Rejected(f"woocommerce store {store.name!r}: no site to publish to (source in the stores file, or "
                           "PRODUCT_STUDIO_WOOCOMMERCE_SITE)")
        if store.consumer_key is None or store.consumer_secret is None:
            raise Rejected(f"woocommerce store {store.name!r}: no REST API consumer key and secret (consumer_key, "
                           "consumer_secret; PRODUCT_STUDIO_WOOCOMMERCE_CONSUMER_KEY / _SECRET)")
        self.upload = store.upload or ("media" if store.wp_app_password is not None else "url")
        if self.upload == "media" and (not store.wp_user or store.wp_app_password is None):
            raise Rejected(f"woocommerce store {store.name!r}: uploading to the media library needs a WordPress "
                           "user and application password (wp_user, wp_app_password), or upload = \"url\"")
        secrets = store.credentials()
        timeout = settings.publish_timeout
        self.wc = Api("WooCommerce", f"{self.site}/wp-json/wc/v3", {"Accept": "application/json"}, timeout=timeout,
                      secrets=secrets, auth=(store.consumer_key.get_secret_value(),
                                             store.consumer_secret.get_secret_value()))
        self.wp = None
        if self.upload == "media":
            self.wp = Api("WordPress", f"{self.site}/wp-json/wp/v2", {"Accept": "application/json"}, timeout=timeout,
                          secrets=secrets, auth=(store.wp_user, store.wp_app_password.get_secret_value()))

    def close(self) -> None:
        self.wc.close()
        if self.wp is not None:
            self.wp.close()

    def _product(self, product_id: str) -> dict:
        if not product_id.isdigit():
            raise Rejected(f"woocommerce: product {product_id[:40]!r} is not a number")
        r = self.wc.request("GET", f"/products/{product_id}", what="woocommerce product", idempotent=True)
        if r.status_code == 404:
            raise Rejected(f"woocommerce: the shop has no product {product_id} (deleted since?)")
        doc = r.json()
        if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
            raise Rejected("woocommerce product: the answer has no images list")
        return doc

    @staticmethod
    def _remotes(images: list) -> list[Remote]:
        return [Remote(id=str(i["id"]), position=n, alt=i.get("alt"), url=i.get("src"), filename=i.get("name"))
                for n, i in enumerate(x for x in images if isinstance(x, dict) and x.get("id") is not None)]

    def images(self, product_id: str) -> list[Remote]:
        return self._remotes(self._product(product_id)["images"])

    def _set_images(self, product_id: str, images: list[dict], what: str, idempotent: bool) -> list[Remote]:
        r = self.wc.request("PUT", f"/products/{product_id}", json={"images": images}, what=what,
                            idempotent=idempotent)
        if r.status_code == 404:
            raise Rejected(f"woocommerce: the shop has no product {product_id} (deleted since?)")
        return self._remotes(r.json().get("images") or [])

    def _attachment(self, image: Image) -> int:
        """The media library's attachment for `image`: found by its mark (an earlier attempt's), or uploaded."""
        assert self.wp is not None
        r = self.wp.request("GET", "/media", params={"search": image.mark, "media_type": "image", "per_page": 10},
                            what="wordpress media search", idempotent=True)
        for item in r.json() if r.status_code == 200 and isinstance(r.json(), list) else ():
            title = (item.get("title") or {}).get("rendered") if isinstance(item.get("title"), dict) else item.get("title")
            if image.mark in " ".join(str(v) for v in (title, item.get("alt_text"), item.get("source_url")) if v):
                return int(item["id"])
        r = self.wp.request("POST", "/media", content=image.data, what="wordpress media upload", idempotent=False,
                            params={"alt_text": image.alt, "title": image.filename.rsplit(".", 1)[0]},
                            headers={"Content-Type": image.content_type,
                                     "Content-Disposition": f'attachment; filename="{image.filename}"'})
        if r.status_code == 404:
            raise Rejected("wordpress media upload: no /wp-json/wp/v2/media here (is the REST API enabled?)")
        created = r.json()
        if not isinstance(created, dict) or created.get("id") is None:
            raise Rejected("wordpress media upload: the answer has no attachment id")
        return int(created["id"])

    def attach(self, product_id: str, image: Image) -> Remote:
        current = [{"id": int(r.id)} for r in self.images(product_id)]
        name = image.filename.rsplit(".", 1)[0]
        if self.upload == "media":
            new = {"id": self._attachment(image), "alt": image.alt, "name": name}
        else:
            if not image.url:
                raise Rejected("woocommerce: upload = \"url\" needs a public link to the image: set "
                               "PRODUCT_STUDIO_PUBLIC_BASE_URL (or use S3 storage), or use upload = \"media\"")
            new = {"src": image.url, "alt": image.alt, "name": name}
        listed = self._set_images(product_id, current + [new], "woocommerce product update", idempotent=False)
        mine = [r for r in listed if r.carries(image.mark)]
        if not mine:
            raise Rejected(f"woocommerce product update: the product does not list the new image {image.mark}")
        return mine[-1]

    def make_first(self, product_id: str, remote: Remote) -> None:
        ids = [r.id for r in self.images(product_id)]
        order = [remote.id] + [i for i in ids if i != remote.id]
        self._set_images(product_id, [{"id": int(i)} for i in order], "woocommerce product update", idempotent=True)

    def detach(self, product_id: str, remote_id: str) -> None:
        # Left in the media library: only the product's image list changes.
        ids = [r.id for r in self.images(product_id)]
        if remote_id in ids:
            self._set_images(product_id, [{"id": int(i)} for i in ids if i != remote_id],
                             "woocommerce product update", idempotent=True)

    def admin_url(self, product_id: str) -> str | None:
        return f"{self.site}/wp-admin/post.php?post={product_id}&action=edit"
