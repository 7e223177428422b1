"""The JSON API's documents (they make the OpenAPI spec)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl


class PublicationOut(BaseModel):
    id: str
    platform: str = Field(description="shopify, woocommerce or bigcommerce")
    store: str = Field(description="the store's name (stores file), or default")
    product_id: str = Field(description="the product on the platform the variant goes to")
    status: str = Field(description="queued, running, published, failed (see error; publish again to retry) or "
                                    "replaced (a later render of the same photo and target took its place)")
    role: str = Field(description="append, or main: put first, replacing the main image")
    image_id: str | None = Field(description="the platform's id of the image, once published")
    image_url: str | None = Field(description="the image on the platform, once published")
    admin_url: str | None = Field(description="the product's page in the store's admin")
    error: str | None = Field(description="why it failed: the platform's message, or the retries given up")
    published_at: str | None


class PublishJob(BaseModel):
    approved_only: bool = Field(True, description="only approved variants (false: every finished variant whose "
                                                  "check passed and that is not rejected)")


class Published(BaseModel):
    queued: list[str] = Field(description="the publications queued by this request (none: all published already)")
    publications: list[PublicationOut] = Field(description="the publications of the variant(s) now")


class VariantOut(BaseModel):
    id: str
    target: str
    scene: str = Field(description='scene preset; "" means the target\'s default')
    seed: int
    status: str = Field(description="pending, running, done or failed")
    check: str | None = Field(description="the marketplace check's verdict, once done")
    warnings: str | None = Field(None, description="what the check noticed without failing, e.g. an enlargement")
    ai_generated: bool
    approved: bool | None = Field(description="null until reviewed")
    error: str | None
    url: str | None = Field(description="signed, expiring download link, once done")
    publications: list[PublicationOut] = Field(default_factory=list,
                                               description="where the variant was published to, and how it went")


class AssetOut(BaseModel):
    id: str
    name: str = Field(description="the output file stem made from the photo's filename")
    filename: str | None = Field(None, description="as uploaded (display only)")
    title: str | None = Field(None, description="the product's title, as given")
    category: str | None = Field(None, description="the product's category, as given")
    width: int | None = Field(None, description="px, upright")
    height: int | None = Field(None, description="px, upright")
    sha256: str = Field(description="of the photo's bytes")
    confidence: float | None = Field(None, description="0-1: the cut-out's calibrated chance of overlapping the "
                                                        "product by >= 80% (IoU); null until cut out")
    needs_review: bool | None = Field(None, description="the cut-out's confidence is below the review threshold: "
                                                        "check it before publishing; null until cut out")
    review_reason: str | None = Field(None, description="why the cut-out needs review")
    mask_version: int | None = Field(None, description="the admin's mask version the cut-out used (touch-up); "
                                                       "null: the models' own")
    variants: list[VariantOut]


class JobParams(BaseModel):
    targets: list[str]
    scene: str | None = Field(None, description="null: each target's default scene")
    seed: int = 0


class JobOut(BaseModel):
    id: str
    status: str = Field(description="queued, running, done, partial or failed")
    origin: str | None = Field(None, description="api, upload, batch or webhook:<platform>")
    store: str | None
    error: str | None
    created_at: str | None = None
    finished_at: str | None
    params: JobParams | None = None
    progress: dict[str, int] = Field(default_factory=dict, description="variants per status, and the total "
                                                                       "(what the job page's bar shows)")
    approved: int = Field(0, description="approved variants (what the job page's zip holds)")
    callback_url: str | None = Field(None, description="where its completion callback goes (credentials masked)")
    callback: str = Field("none", description="none, waiting, sending, delivered, failed or not sent")
    callbacks: list["CallbackAttemptOut"] = Field(default_factory=list, description="every attempt, oldest first")
    assets: list[AssetOut]


class JobSummary(BaseModel):
    id: str
    status: str
    origin: str
    created_at: str
    photos: int
    progress: dict[str, int] = Field(description="variants per status, and the total")


class JobCreated(BaseModel):
    id: str
    created: bool = Field(description="false when the same photos and parameters found an existing job")
    status: str


class JobFromUrls(BaseModel):
    image_urls: list[HttpUrl] = Field(min_length=1, max_length=50)
    targets: list[str] = Field(min_length=1)
    scene: str | None = None
    seed: int = Field(0, ge=0, lt=2**32)
    title: str | None = Field(None, max_length=500)
    category: str | None = Field(None, max_length=500)
    callback_url: HttpUrl | None = None


class Regenerate(BaseModel):
    seed: int | None = Field(None, ge=0, lt=2**32, description="default: a new random seed")
    scene: str | None = Field(None, description="default: the variant's scene")


class StrokeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is refused, never silently dropped

    mode: Literal["keep", "remove"] = Field(description="keep: this is product; remove: this is not")
    radius: float = Field(gt=0, le=10_000, description="brush radius, px of the photo")
    points: list[tuple[float, float]] = Field(min_length=1, max_length=20_000,
                                              description="the brush's path, [x, y] in px of the photo")


class MaskStrokes(BaseModel):
    """A touch-up: strokes over the photo and/or a box around the product, applied to the current
    mask (the photo's chosen mask, else the models' cut-out)."""

    model_config = ConfigDict(extra="forbid")

    strokes: list[StrokeIn] = Field(default_factory=list, max_length=500)
    box: tuple[float, float, float, float] | None = Field(
        None, description="[x0, y0, x1, y1] in px of the photo: the product is inside, everything outside is removed")


class MaskRestore(BaseModel):
    version: int = Field(ge=0, le=2**31 - 1, description="the mask version to use again; 0: the models' own cut-out")


class MaskOut(BaseModel):
    asset_id: str
    version: int = Field(description="the new mask version, now the photo's chosen mask")
    origin: str = Field(description='"strokes", "upload" or "restore of <version>"')
    variants_queued: list[str] = Field(description="the photo's variants, rendering again from the new mask")


class Error(BaseModel):
    error: str


DeliveryStatusName = Literal["accepted", "duplicate", "rejected", "stale", "processed", "failed", "ignored"]


class CallbackAttemptOut(BaseModel):
    url: str = Field(description="where it was POSTed (credentials masked)")
    attempt: int = Field(description="1, 2, ... within one run of retries")
    at: str = Field(description="when it was tried (ISO 8601, UTC)")
    status_code: int | None = Field(description="the receiver's HTTP status; null when none came")
    error: str | None = Field(description="why it failed: the address refused or not found, a timeout...")
    ok: bool = Field(description="true: a 2xx answer")


class DeliveryJobOut(BaseModel):
    id: str = Field(description="the job (GET /api/v1/jobs/{id})")
    status: str = Field(description="queued, running, done, partial or failed")
    callback_url: str | None = Field(description="where its completion callback goes (credentials masked)")
    callback: str = Field(description="none (no callback_url), waiting (job not finished), sending (an attempt or "
                                      "retry is under way or due), delivered, failed (retry the delivery to send it "
                                      "again) or not sent")
    callbacks: list[CallbackAttemptOut] = Field(description="every attempt, oldest first")


class DeliveryOut(BaseModel):
    id: str = Field(description="the delivery as Product Studio recorded it")
    received_at: str = Field(description="ISO 8601, UTC")
    platform: str = Field(description="shopify, woocommerce, bigcommerce or generic")
    store: str | None = Field(description="the store it was verified for; null when the signature matched none")
    topic: str | None
    platform_id: str | None = Field(description="the id the platform gave the delivery (its retries repeat it)")
    status: DeliveryStatusName = Field(description="accepted (being processed), processed, failed, ignored, stale, "
                                                   "duplicate or rejected (bad signature or body)")
    reason: str | None = Field(description="why it has that status")
    retryable: bool = Field(description="POST /api/v1/deliveries/{id}/retry would do something")
    retry: str = Field(description="what a retry does, or why it cannot be retried")
    jobs: list[DeliveryJobOut] = Field(description="the jobs it made, one per scene")


class DeliveryRetried(BaseModel):
    retrying: Literal["intake", "callbacks"] = Field(description="intake: the delivery runs again (it was failed); "
                                                                 "callbacks: its jobs' failed callbacks are sent again")
    jobs: list[str] = Field(description="the jobs whose callbacks are sent again")
    delivery: DeliveryOut = Field(description="the delivery now")
