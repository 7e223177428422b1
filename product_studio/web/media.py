"""Files the doors hand out: uploads read within limits, one variant, a zip of the approved
ones, and small previews for the gallery."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from urllib.parse import quote

import cv2
import numpy as np
from fastapi import HTTPException, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response, StreamingResponse
from sqlalchemy import select
from zipstream import ZIP_STORED, ZipStream

from .. import content_types, runtime
from ..config import Settings
from ..content_keys import content_key
from ..content_types import extension_for
from ..errors import BadInput
from ..jobs.stored import StoredUpload, store_upload
from ..models import Asset, Variant
from ..pipeline.ingest import load_bytes
from ..storage import BlobStore

PREVIEW_SIDE = 480


class TooLarge(BadInput):
    http_status = 413


async def read_uploads(files: list[UploadFile], settings: Settings, *, title: str | None = None,
                       category: str | None = None) -> list[StoredUpload]:
    """The uploaded photos, each checked (type and header: a non-image is refused at once) and
    stored as it is read, refusing too many or too big ones. Only what the header says is kept:
    one upload's bytes at a time are in memory and nothing is decoded here (the cut-out task
    decodes). The filename is kept for display only: storage keys are content hashes and output
    names are sanitised stems."""
    files = [f for f in files if f.filename or f.size]
    if not files:
        raise BadInput("choose at least one photo")
    if len(files) > settings.max_upload_files:
        raise TooLarge(f"{len(files)} photos in one upload; the limit is {settings.max_upload_files}")
    title, category = _text(title), _text(category)
    uploads = []
    for f in files:
        data = await f.read(settings.max_input_bytes + 1)
        if len(data) > settings.max_input_bytes:
            raise TooLarge(f"{f.filename!r} is over {settings.max_input_bytes // (1024 * 1024)} MiB")
        uploads.append(await run_in_threadpool(store_upload, data, f.filename or "upload", title=title,
                                               category=category, settings=settings))
    return uploads


def _text(value: str | None, limit: int = 500) -> str | None:
    value = (value or "").strip()
    if len(value) > limit:
        raise BadInput(f"a title or category is at most {limit} characters")
    return value or None


def variant_filename(variant: Variant) -> str:
    """"<photo>-<target>-<scene>-<seed>.<ext>"; a pure-white target draws no scene, so its name
    has none ("coffee-amazon-main-0.jpg")."""
    from ..presets import TARGETS

    ext = extension_for(variant.content_type)
    target = TARGETS.get(variant.target)
    scene = "" if target is not None and target.pure_white else f"-{variant.scene or 'default'}"
    return f"{variant.asset.name}-{variant.target}{scene}-{variant.seed}.{ext}"


# RFC 8187 section 3.2.1 attr-char, beyond letters and digits: what filename*= may carry unencoded.
_ATTR_CHARS = "!#$&+-.^_`|~"
_PLAIN = re.compile(r"[A-Za-z0-9 !#$&'()+,\-.;=@\[\]^_`{}~]+")  # safe inside a quoted-string, as is


def content_disposition(filename: str, disposition: str = "attachment") -> str:
    """A Content-Disposition value naming `filename` for every client (RFC 6266 section 4.3):
    `filename="<ASCII fallback>"` for old clients, plus `filename*=UTF-8''<percent-encoded>`
    (RFC 8187, which obsoletes RFC 5987) whenever the name is not plain ASCII. The fallback
    folds accents (NFKD) and turns anything else outside printable ASCII, quotes, backslashes and
    path separators into "_". Header values must be Latin-1 for the server to send them at all
    (a non-Latin-1 name in `filename=` was a 500); this one is always ASCII. Never raises."""
    if not filename or _PLAIN.fullmatch(filename):
        return f'{disposition}; filename="{filename or "download"}"'
    fallback = "".join(_ascii(c) for c in filename) or "download"
    return f"{disposition}; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe=_ATTR_CHARS)}"


def _ascii(char: str) -> str:
    """One character of the ASCII fallback: itself if plain, its unaccented letter, else "_"."""
    folded = unicodedata.normalize("NFKD", char).encode("ascii", "ignore").decode("ascii")
    return folded if folded and _PLAIN.fullmatch(folded) else "_"


def variant_download(variant_id: str) -> Response:
    """One variant's file as an attachment named after its photo, target, scene and seed, streamed
    from the store a chunk at a time."""
    with runtime.database().session() as s:
        variant = s.get(Variant, variant_id)
        if variant is None:
            raise HTTPException(404, f"no variant {variant_id}")
        if not variant.key:
            raise BadInput(f"variant {variant.id} has no file yet ({variant.status})")
        key, name, ctype = variant.key, variant_filename(variant), variant.content_type
    return blob_response(runtime.store().open_read(key), ctype,
                         {"Content-Disposition": content_disposition(name)})


def blob_response(reader, media_type: str | None, headers: dict[str, str] | None = None) -> StreamingResponse:
    """A stored object (a BlobReader, opened already so a missing one fails before answering)
    sent a chunk at a time, with its length."""
    return StreamingResponse(reader.chunks(), media_type=media_type,
                             headers={**(headers or {}), "Content-Length": str(reader.size)})


NO_APPROVED = "no approved variants in this job yet: approve some first, then download the zip"


def approved_zip(job_id: str) -> tuple[Iterator[bytes], int]:
    """A zip of the job's approved variants, one folder per photo, as chunks made while they are
    sent (each entry read from the store a chunk at a time, so memory stays flat whatever the
    zip's size); and how many it holds."""
    with runtime.database().session() as s:
        rows = s.scalars(select(Variant).join(Asset).where(Asset.job_id == job_id, Variant.approved.is_(True),
                                                            Variant.key.is_not(None))
                         .order_by(Asset.position, Variant.created_at)).all()
        entries = [(f"{v.asset.position + 1:03d}-{v.asset.name}/{variant_filename(v)}", v.key) for v in rows]
    blobs = runtime.store()
    zs = ZipStream(compress_type=ZIP_STORED)  # JPEG/PNG/WebP are compressed already
    for name, key in entries:
        zs.add(_chunks_of(blobs, key), name)
    return iter(zs), len(entries)


def _chunks_of(blobs: BlobStore, key: str) -> Iterator[bytes]:
    """A blob's chunks, opened only when the zip reaches it."""
    yield from blobs.open_read(key).chunks()


def preview(key: str, side: int = PREVIEW_SIDE) -> bytes:
    """A JPEG at most `side` px on its longer side, made once and kept in the store.
    Transparent areas show on white."""
    blobs = runtime.store()
    thumb = content_key("previews", "jpg", key, str(side))
    if blobs.exists(thumb):
        return blobs.get(thumb)
    source = load_bytes(blobs.get(key), "preview")
    rgb = source.rgb.astype(np.float32)
    if source.alpha is not None:
        a = source.alpha.astype(np.float32)[..., None] / 255.0
        rgb = rgb * a + 255.0 * (1 - a)
    h, w = rgb.shape[:2]
    scale = min(1.0, side / max(h, w))
    small = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(np.clip(small, 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, 82])
    blobs.put(thumb, data.tobytes(), content_types.JPEG)
    return data.tobytes()
