"""One Settings object, read from the environment (prefix PRODUCT_STUDIO_) and an optional .env file."""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import ByteSize, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .errors import BadSetting


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "product-studio"


def _default_model_dir() -> Path:
    # rembg's own convention, so a model rembg downloaded elsewhere is found here too.
    return Path(os.environ.get("U2NET_HOME") or Path.home() / ".u2net")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PRODUCT_STUDIO_", env_file=".env", extra="ignore")

    # Where the embedded defaults keep their state: SQLite database, blobs, broker folders.
    data_dir: Path = Field(default_factory=_default_data_dir)
    database_url: str | None = Field(None, description="SQLAlchemy URL; default sqlite:///<data_dir>/product-studio.db")
    broker_url: str = Field("filesystem://", description="Celery broker: filesystem:// (embedded), redis://, amqp://")
    broker_visibility_timeout: int = Field(3600, ge=1, description="redis: seconds before an unacked task is redelivered")
    storage_url: str | None = Field(None, description="path, file:///abs/path or s3://bucket/prefix?endpoint=...; "
                                                      "default <data_dir>/blobs")
    # Signing secrets: unset, each is generated once and kept in the database (runtime.secret).
    storage_secret: SecretStr | None = Field(None, description="HMAC key for local download URLs; default: "
                                                               "generated once, kept in the database")
    public_base_url: str | None = Field(None, description="e.g. https://studio.example.com; prefixes download URLs")
    download_url_expires: int = Field(3600, ge=1, le=604800)
    callback_secret: SecretStr | None = Field(None, description="HMAC key for signed completion callbacks; "
                                                                "default: generated once, kept in the database")
    task_soft_time_limit: int = Field(600, ge=1, description="seconds before a task is asked to stop")
    task_time_limit: int = Field(720, ge=1, description="seconds before a task's process is killed")
    requeue_after: float = Field(900, gt=0, description="seconds untouched before unfinished work is re-enqueued")
    sweep_interval: float = Field(30, gt=0, description="seconds between a worker's checks for lost work")

    # Retention (`product-studio gc`, and every worker every gc_interval): off, or generous, by default
    gc_interval: float = Field(86400, ge=0, description="seconds between a worker's garbage collections; 0: never")
    gc_grace: float = Field(3600, ge=0, description="seconds a blob is kept whatever refers to it: one written by a "
                                                    "worker whose row is not committed yet must not go")
    retain_jobs_days: float | None = Field(None, gt=0, description="finished jobs older than this many days are "
                                                                   "removed (rows, then their blobs); unset: kept")
    retain_rejected_deliveries_days: float | None = Field(30, gt=0, description="rejected and duplicate webhook "
                                                                                 "deliveries older than this go")
    retain_product_states_days: float | None = Field(None, gt=0, description="product states untouched this "
                                                                             "many days go; unset: kept")
    retain_previews_days: float | None = Field(None, gt=0, description="previews older than this go (made again "
                                                                       "when shown); unset: kept while their blob is")

    # Models
    model_dir: Path = Field(default_factory=_default_model_dir, description="where rembg models live (U2NET_HOME)")
    cutout_model: str = Field("u2netp+u2net", description="a rembg model (u2net, isnet-general-use...) or several "
                              "joined by '+' whose probabilities are averaged")
    cutout_review_below: float = Field(0.87, ge=0, le=1, description="cut-outs whose confidence is below this "
                                       "are marked 'needs review'")
    edge_detector: str = Field("canny", description="controlnet-aux detector for the control image")
    annotators_repo: str = Field("lllyasviel/Annotators", description="hub id or local folder of detector weights")
    offline: bool = Field(True, description="never reach a model hub; missing weights fail at once")
    device: str = Field("cpu", pattern=r"^(cpu|cuda(:\d+)?|mps|xpu(:\d+)?)$",
                        description="torch device for torch-based detectors and generators: cpu, cuda, cuda:N, "
                                    "mps or xpu")

    # Generative scenes (diffusers ControlNet inpainting). Ids are hub ids or local folders.
    diffusion_kind: str = Field("sd15", pattern="^(sd15|sdxl)$",
                                description="sd15 or sdxl: which ControlNet inpaint pipeline to build")
    diffusion_model: str = Field("stable-diffusion-v1-5/stable-diffusion-inpainting", description="base model")
    diffusion_controlnet: str = Field("lllyasviel/control_v11p_sd15_canny", description="ControlNet model")
    diffusion_lora: str | None = Field(None, description="optional LoRA, e.g. latent-consistency/lcm-lora-sdv1-5")
    diffusion_scheduler: str | None = Field(None, description="diffusers scheduler class name, e.g. LCMScheduler")
    diffusion_steps: int = Field(30, ge=1)
    diffusion_guidance: float = Field(7.0, ge=0)
    diffusion_conditioning_scale: float = Field(0.8, ge=0)
    # Retired: it never had an effect (issue 17): a generative target makes one image per seed, and more
    # per call would need a variant row, key, file and callback entry per image in every door. Kept,
    # out of dumps and keys, only to refuse a value that would be silently ignored.
    diffusion_variants: int | None = Field(None, exclude=True, description="retired: unset, or 1")
    diffusion_dtype: str | None = Field(None, description="float16/bfloat16/float32; default fp16 on CUDA, fp32 on CPU")
    diffusion_cpu_offload: bool = Field(False, description="enable_model_cpu_offload() for small GPUs")

    scenes_file: Path | None = Field(None, description="TOML file of extra [[scene]] presets")

    # Input limits (decompression bombs, absurd uploads)
    max_input_bytes: ByteSize = Field(50 * 1024 * 1024, ge=1, description="bytes per photo: a number, or a size "
                                                                       "like 50MB or 200 MiB (MB = 10^6, MiB = 2^20)")
    max_input_pixels: int = Field(100_000_000, ge=1, description="pixels per photo: a number, or megapixels "
                                                                 "written like 100MP or 250 MP")
    min_input_side: int = 16

    # Cut-out refinement
    cutout_flip_tta: bool = Field(False, description="average a horizontally flipped pass (better edges, 2x model time)")
    cutout_refine: bool = Field(True, description="clean and refine the rembg mask")
    cutout_decontaminate: bool = Field(True, description="estimate foreground colours in the soft edge band")
    cutout_threads: int = Field(0, ge=0, description="ONNX Runtime threads per session; 0 = one per core")

    # Web: admin sign-in and uploads
    session_secret: SecretStr | None = Field(None, description="key signing session cookies; default: generated "
                                                               "once, kept in the database")
    session_cookie_secure: bool = Field(True, description="Secure cookie flag: browsers send it over HTTPS (and "
                                                          "to localhost) only; false only behind plain-HTTP proxies")
    session_max_age: int = Field(12 * 3600, ge=60, description="seconds a sign-in lasts")
    login_rate_limit: str = Field("5/minute", description="failed sign-ins allowed per username (counted in the "
                                                          "database; limits notation, e.g. 5/minute)")
    login_client_rate_limit: str = Field("20/minute", description="failed sign-ins allowed per client address, "
                                                                  "whatever the usernames (rate_limit_storage)")
    rate_limit_storage: str | None = Field(None, description="where sign-in and regeneration counts live, shared by "
                                                             "every web process: a `limits` storage URI (redis://, "
                                                             "memcached://, memory://); default the broker's Redis "
                                                             "when the broker is Redis, else memory:// (one process)")
    webhook_rejected_rate_limit: str = Field("60/minute", description="rejected webhook requests recorded per "
                                                                      "client address; more get 429, unrecorded")
    regenerate_limit_per_variant: str = Field("20/hour", description="regenerations of one photo's variant for one "
                                                                     "target in a moving window; more get 429")
    regenerate_limit_per_job: str = Field("200/hour", description="regenerations within one job in a moving window; "
                                                                  "more get 429")
    read_timeout: float = Field(20.0, gt=0, description="seconds a client has to send a request's headers, and its "
                                                        "body beyond read_min_rate; slower clients are dropped")
    read_min_rate: int = Field(1024, ge=1, description="bytes a second a request body must average once "
                                                       "read_timeout has passed (an upload of 200 MiB at this rate "
                                                       "takes 56 hours: it is a floor, not a speed)")
    forwarded_allow_ips: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="proxies whose X-Forwarded-For / X-Forwarded-Proto are believed "
                                          "(addresses or CIDRs, comma-separated); empty: none, the client is the "
                                          "peer address")
    max_upload_files: int = Field(50, ge=1, description="photos per upload")
    max_upload_bytes: ByteSize = Field(200 * 1024 * 1024, ge=1, description="bytes per upload request, all "
                                                                         "photos: a number, or a size like 200 MiB")
    templates_dir: Path = Field(Path(__file__).resolve().parent.parent / "templates", description="Jinja templates")

    # Webhooks and fetching
    fetch_allow: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="hosts or CIDRs that image fetches may reach even though they are private "
                                          "(comma-separated), e.g. 127.0.0.1,10.0.0.0/8,images.internal")
    fetch_timeout: float = Field(20.0, gt=0, description="seconds one image fetch may take in all: DNS, connect, "
                                                         "redirects and body")
    fetch_max_redirects: int = Field(5, ge=0, le=20, description="redirects one image fetch may follow")
    stores_file: Path | None = Field(None, description="TOML file of [[store]] tables: several stores, each with "
                                                       "its own secrets, targets, scenes and callback URL")
    shopify_webhook_secret: SecretStr | None = Field(None, description="single-store default: the app's secret; "
                                                                       "commas separate secrets during a rotation")
    woocommerce_webhook_secret: SecretStr | None = Field(None, description="single-store default: the webhook secret")
    bigcommerce_webhook_secret: SecretStr | None = Field(None, description="single-store default: the value of the "
                                                                           "X-Product-Studio-Token header the hook sends")
    bigcommerce_api_token: SecretStr | None = Field(None, description="single-store default: X-Auth-Token for the "
                                                                      "catalog API")
    bigcommerce_api_url: str = Field("https://api.bigcommerce.com", description="BigCommerce API base URL")
    bigcommerce_store_hash: str | None = Field(None, description="single-store default: the store hash (publishing "
                                                                 "needs it; webhooks from other stores are refused "
                                                                 "once set)")
    generic_webhook_secret: SecretStr | None = Field(None, description="single-store default for /webhooks/generic")
    webhook_targets: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["amazon-main", "shopify-square", "lifestyle"],
        description="single-store default: targets made for each new or changed product image")
    webhook_scenes: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="single-store default: scene presets (one job per scene); empty: each "
                                          "target's own")
    webhook_callback_url: str | None = Field(None, description="single-store default: completion callback URL")
    webhook_queue: str = Field("cpu-intake", description="Celery queue of webhook intake (fetching, job creation); "
                                                         "e.g. 'webhooks' for workers of their own")

    # Publishing back to the store (product_studio/publish; per store in the stores file too)
    publish: str = Field("off", pattern="^(off|on-approve|auto)$",
                         description="single-store default: when variants go back to the product: off, on-approve "
                                     "(approving one publishes it), auto (every variant that passes its check and "
                                     "whose photo needs no review)")
    publish_mode: str = Field("append", pattern="^(append|replace-main)$",
                              description="single-store default: append the images, or replace-main: the first "
                                          "target's variant of the first photo becomes the main image")
    shopify_shop: str | None = Field(None, description="single-store default: the shop's myshopify.com domain "
                                                       "(webhooks from other shops are refused once set)")
    shopify_access_token: SecretStr | None = Field(None, description="single-store default: Admin API access "
                                                                     "token (scope write_products) for publishing")
    shopify_api_url: str | None = Field(None, description="single-store default: Admin API base URL; default "
                                                          "https://<shopify_shop>")
    shopify_api_version: str = Field("2026-10", pattern=r"^(\d{4}-\d{2}|unstable)$",
                                     description="GraphQL Admin API version used for publishing")
    woocommerce_site: str | None = Field(None, description="single-store default: the shop's site URL (webhooks from "
                                                           "other sites are refused once set)")
    woocommerce_consumer_key: SecretStr | None = Field(None, description="single-store default: REST API consumer "
                                                                         "key (Read/Write)")
    woocommerce_consumer_secret: SecretStr | None = Field(None, description="single-store default: its secret")
    woocommerce_wp_user: str | None = Field(None, description="single-store default: the WordPress user of the "
                                                              "application password")
    woocommerce_wp_app_password: SecretStr | None = Field(None, description="single-store default: a WordPress "
                                                                            "application password (media uploads)")
    woocommerce_upload: str | None = Field(None, pattern="^(media|url)$",
                                           description="single-store default: media (the media library, with the "
                                                       "application password) or url (WooCommerce downloads the "
                                                       "signed link); default media when a password is set")
    publish_timeout: float = Field(30.0, gt=0, description="seconds one request to a store's API may take")
    publish_media_wait: float = Field(120.0, gt=0, description="seconds to wait for the platform to finish "
                                                               "processing an uploaded image (Shopify: READY)")

    @field_validator("login_rate_limit", "login_client_rate_limit", "regenerate_limit_per_variant",
                     "regenerate_limit_per_job")
    @classmethod
    def _rate(cls, value: str) -> str:
        """A rate in the `limits` notation ("5/minute", "20 per hour"): refused at start if it does not parse."""
        from limits import parse

        try:
            parse(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a rate like 5/minute or 20 per hour") from None
        return value

    @field_validator("max_input_pixels", mode="before")
    @classmethod
    def _megapixels(cls, value: Any) -> Any:
        """"250MP" / "250 MP" / "12.5 MP" -> pixels; anything else is left to the int check."""
        if isinstance(value, str) and value.strip().upper().endswith("MP"):
            try:
                return round(float(value.strip()[:-2]) * 1_000_000)
            except ValueError:
                return value
        return value

    @field_validator("fetch_allow", "webhook_targets", "webhook_scenes", "forwarded_allow_ips", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        """Lists from the environment: "a,b" (or a JSON array)."""
        if isinstance(value, str):
            text = value.strip()
            return json.loads(text) if text.startswith("[") else [p.strip() for p in text.split(",") if p.strip()]
        return value

    @field_validator("diffusion_variants")
    @classmethod
    def _retired_variants(cls, value: int | None) -> int | None:
        """PRODUCT_STUDIO_DIFFUSION_VARIANTS is retired: any value but 1 is refused at start (ValueError)."""
        if value not in (None, 1):
            raise ValueError("PRODUCT_STUDIO_DIFFUSION_VARIANTS is retired: each generative target makes one "
                             "image per seed; for more images use other seeds (--seed, the API's seed, "
                             "regenerate), and unset it")
        return value

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'product-studio.db'}"

    @property
    def storage(self) -> str:
        return self.storage_url or str(self.data_dir / "blobs")

    @property
    def rate_limits(self) -> str:
        """The `limits` storage URI for sign-in and regeneration counts: rate_limit_storage, else
        the broker's Redis when the broker is Redis, else memory:// (this process only)."""
        if self.rate_limit_storage:
            return self.rate_limit_storage
        if self.broker_url.startswith(("redis://", "rediss://")):
            return self.broker_url
        return "memory://"

    def apply_environment(self) -> None:
        """Export what third-party libraries read from the environment, before they are imported."""
        os.environ["U2NET_HOME"] = str(self.model_dir)
        # rembg imports pymatting, whose numba kernels take ~30 s to compile: cache them once.
        os.environ.setdefault("NUMBA_CACHE_DIR", str(Path.home() / ".cache" / "product-studio" / "numba"))
        if self.offline:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings, read once. Raises BadSetting naming each bad PRODUCT_STUDIO_* variable."""
    try:
        return Settings()
    except ValidationError as exc:
        raise BadSetting(settings_problems(exc)) from None


def settings_problems(exc: ValidationError) -> str:
    """One line per bad setting: the variable, its value (a secret's never) and what is accepted."""
    lines = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else "?"
        info = Settings.model_fields.get(field)
        secret = info is not None and "SecretStr" in str(info.annotation)
        value = "" if secret or error.get("input") is None else f"={str(error['input'])[:80]!r}"
        accepted = f" (accepted: {info.description})" if info is not None and info.description else ""
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"PRODUCT_STUDIO_{field.upper()}{value}: {message}{accepted}")
    return "bad setting: " + "; ".join(lines)
