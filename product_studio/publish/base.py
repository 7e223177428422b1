"""What a publisher is: one small class per platform behind one interface, and the errors every
publisher raises.

The service (service.py) drives every platform the same way: read the product's images back, look
for the publication's mark, attach the image only when it is not there yet, wait until the
platform has processed it, put it first when it is to be the main image, and take off the image it
replaces. Each step is safe to repeat after a crash, because it starts from what the platform says.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from ..errors import BadInput, TransientError
from . import marks


@dataclass(frozen=True)
class Image:
    """One image to upload: a variant's bytes with its file name, alt text and mark."""

    data: bytes
    filename: str
    content_type: str
    alt: str
    mark: str
    url: str | None = None  # a public, signed link to the same bytes (for platforms that fetch it themselves)


@dataclass(frozen=True)
class Remote:
    """One image on a product, as the platform lists it. `position`: 0 is the main image."""

    id: str
    position: int
    alt: str | None = None
    url: str | None = None
    filename: str | None = None
    ready: bool = True  # False while the platform still processes it (Shopify: not READY yet)

    def carries(self, mark: str) -> bool:
        return marks.carries(mark, self.alt, self.url, self.filename)

    def ours(self) -> bool:
        """Whether it carries any Product Studio mark."""
        return bool(marks.variant_ids(self.alt, self.url, self.filename))


class Rejected(BadInput):
    """The platform refused the request for what it is (a validation error, an unknown product, a
    missing permission): recorded as failed with the platform's message; retrying the same request
    cannot help, the admin can retry after fixing the cause."""


class Throttled(TransientError):
    """The platform's rate limit: retry after `retry_after` seconds (the request was not run)."""

    def __init__(self, message: str, retry_after: float):
        super().__init__(message)
        self.retry_after = retry_after


class NoSuchItem(BadInput):
    """A variant or job that does not exist (a 404 at the doors)."""

    http_status = 404


class Publisher(ABC):
    """One platform's way of putting an image on a product. Made per store (its credentials and
    API base URL); every method raises Rejected (the platform refused: permanent), Throttled or
    TransientError (rate limits, 5xx, timeouts: retry later)."""

    platform = ""

    def __init__(self, store: Any, settings: Any):
        self.store = store
        self.settings = settings

    @abstractmethod
    def images(self, product_id: str) -> list[Remote]:
        """The product's images in their order (position 0 first). Rejected when the store has
        no such product."""

    @abstractmethod
    def attach(self, product_id: str, image: Image) -> Remote:
        """Upload `image` and add it to the product after its images; the new image as listed.
        Not idempotent: the service calls it only after `images` showed no image with its mark."""

    def wait_ready(self, product_id: str, remote: Remote) -> Remote:
        """`remote` once the platform has processed it (Shopify's media status READY). Rejected if
        processing failed; TransientError if it takes longer than settings.publish_media_wait."""
        return remote

    @abstractmethod
    def make_first(self, product_id: str, remote: Remote) -> None:
        """Make `remote` the product's main image (position 0), keeping the others' order."""

    @abstractmethod
    def detach(self, product_id: str, remote_id: str) -> None:
        """Take the image `remote_id` off the product (the platform may keep the file itself)."""

    def admin_url(self, product_id: str) -> str | None:
        """The product's page in the store's admin, for the gallery's link; None if unknown."""
        return None
