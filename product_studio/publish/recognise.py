"""Which of a product's images Product Studio put there, so that the update webhook publishing
makes the platform send back makes no job (no loop).

An image is ours when the platform id it carries is one a publication recorded for this product,
or when its alt text, file name or URL carries a Product Studio mark (marks.py): the mark also
covers an image whose publication had not recorded its id yet when the webhook came.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from sqlalchemy.orm import Session

from . import marks, records


class Seen(Protocol):
    """An image as a webhook lists it (webhooks.platforms.ImageRef)."""

    key: str
    url: str
    remote_id: str | None
    alt: str | None


def _numeric(value: str) -> str:
    return value.rsplit("/", 1)[-1]  # "gid://shopify/MediaImage/9" and "9" are the same image


def ours(session: Session, platform: str, store: str, product_id: str | None, images: Iterable[Seen]) -> set[str]:
    """The keys of `images` that Product Studio published (recorded ids, or a mark)."""
    images = list(images)
    recorded = {_numeric(i) for i in records.published_ids(session, platform, store, product_id)} \
        if product_id is not None else set()
    return {img.key for img in images
            if (img.remote_id and _numeric(img.remote_id) in recorded) or marks.variant_ids(img.alt, img.url)}
