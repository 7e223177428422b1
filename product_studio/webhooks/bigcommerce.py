"""The little of BigCommerce's catalog API that webhook intake needs: one product with its images.

BigCommerce webhooks carry only {data: {type, id}}; the product itself is read here, from the
store's API base URL (PRODUCT_STUDIO_BIGCOMMERCE_API_URL, or `api_url` in the stores file), which
is configuration, not payload: it is trusted and not put through the SSRF checks.
"""

from __future__ import annotations

import re
from typing import Any

import httpx

from ..errors import BadInput, TransientError
from .stores import Store

_SEGMENT = re.compile(r"[A-Za-z0-9_-]{1,64}")


def get_product(store: Store, store_hash: str, product_id: str, settings: Any) -> dict:
    """GET /stores/{hash}/v3/catalog/products/{id}?include=images -> the product's `data` object."""
    if not _SEGMENT.fullmatch(store_hash) or not product_id.isdigit():
        raise BadInput(f"bigcommerce: store hash {store_hash[:80]!r} or product id {product_id[:80]!r} is malformed")
    if store.api_token is None:
        raise BadInput(f"bigcommerce store {store.name!r} has no API token (PRODUCT_STUDIO_BIGCOMMERCE_API_TOKEN "
                       "or api_token in the stores file)")
    base = (store.api_url or settings.bigcommerce_api_url).rstrip("/")
    url = f"{base}/stores/{store_hash}/v3/catalog/products/{product_id}"
    where = f"bigcommerce product {product_id} of store {store_hash}"
    try:
        r = httpx.get(url, params={"include": "images"}, timeout=settings.fetch_timeout, trust_env=False,
                      headers={"X-Auth-Token": store.api_token.get_secret_value(), "Accept": "application/json"})
    except httpx.TimeoutException:
        raise TransientError(f"{where}: the API timed out") from None
    except httpx.HTTPError as exc:
        raise TransientError(f"{where}: the API is unreachable: {type(exc).__name__}") from None
    if r.status_code == 404:
        raise BadInput(f"{where}: the API has no such product (deleted since?)")
    if r.status_code in (401, 403):
        raise BadInput(f"{where}: the API refused the token ({r.status_code})")
    if r.status_code == 429 or r.status_code >= 500:
        raise TransientError(f"{where}: the API answered {r.status_code}")
    if r.status_code != 200:
        raise BadInput(f"{where}: the API answered {r.status_code}")
    try:
        data = r.json()["data"]
    except (ValueError, KeyError, TypeError):
        raise BadInput(f"{where}: the API's answer has no data object") from None
    if not isinstance(data, dict):
        raise BadInput(f"{where}: the API's answer has no data object")
    return data
