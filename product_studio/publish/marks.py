"""The mark on every image Product Studio uploads: "ps-<variant id>-<render>".

No platform takes an idempotency key, so what is uploaded says what it is: the mark is put in the
image's alt text and in its file name. Before an upload is tried again, the product's images are
read back: one carrying the mark means the earlier attempt got through, and the publication is
settled instead of uploading a second copy. `<render>` is 8 hex digits of the variant's stored
file key, so a variant rendered again (a fixed mask) carries another mark than its earlier render.
Webhook intake reads the same marks to know the images it must not make jobs from.
"""

from __future__ import annotations

import hashlib
import re

MARK = re.compile(r"ps-([0-9a-f]{32})-([0-9a-f]{8})")
ALT_MAX = 512  # Shopify's limit on alt text; WooCommerce and BigCommerce take at least as much


def make_mark(variant_id: str, variant_key: str) -> str:
    """The mark of one render of a variant (`variant_key`: its stored file's key)."""
    return f"ps-{variant_id}-{hashlib.sha256(variant_key.encode()).hexdigest()[:8]}"


def variant_ids(*texts: str | None) -> set[str]:
    """The variant ids of every mark found in `texts` (alt texts, file names, URLs)."""
    return {m.group(1) for t in texts if t for m in MARK.finditer(t)}


def carries(mark: str, *texts: str | None) -> bool:
    """Whether any of `texts` carries exactly `mark`."""
    return any(t and mark in t for t in texts)


def alt_text(title: str, mark: str) -> str:
    """`title [mark]`, the title shortened so the whole fits ALT_MAX characters."""
    tail = f" [{mark}]"
    title = " ".join(title.split())
    if len(title) + len(tail) > ALT_MAX:
        title = title[: ALT_MAX - len(tail) - 1].rstrip() + "…"
    return f"{title}{tail}"


def file_name(stem: str, mark: str, extension: str) -> str:
    """`<stem>-<mark>.<extension>`; the stem is reduced to [a-z0-9-] (platforms rewrite the rest)."""
    safe = re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-")[:60] or "image"
    return f"{safe}-{mark}.{extension.lstrip('.')}"
