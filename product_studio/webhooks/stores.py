"""The stores that may send webhooks: who they are, how they sign, what to make for them.

A single store per platform comes from settings (PRODUCT_STUDIO_SHOPIFY_WEBHOOK_SECRET, ...; its
name is "default"); more come from a TOML file named by PRODUCT_STUDIO_STORES_FILE:

    [[store]]
    name = "acme"                       # recorded on its jobs and deliveries
    platform = "shopify"                # shopify, woocommerce, bigcommerce or generic
    source = "acme.myshopify.com"       # optional: X-Shopify-Shop-Domain, X-WC-Webhook-Source,
                                        # BigCommerce store hash; unset: any source
    secrets = ["new-secret", "old-secret"]   # any of them verifies (a rotation)
    targets = ["amazon-main", "lifestyle"]
    scenes = ["marble"]                 # one job per scene; empty: each target's own
    callback_url = "https://acme.example.com/studio-done"
    api_token = "..."                   # BigCommerce: X-Auth-Token for the catalog API;
                                        # Shopify: the Admin API access token (publishing)
    api_url = "https://api.bigcommerce.com"   # Shopify: default https://<source>
    api_version = "2026-10"             # Shopify: the GraphQL Admin API version
    consumer_key = "ck_..."             # WooCommerce: REST API key (Read/Write) for wc/v3
    consumer_secret = "cs_..."
    wp_user = "studio"                  # WooCommerce: a WordPress user and its application password,
    wp_app_password = "abcd efgh ..."   # for uploads to the media library (wp/v2/media)
    upload = "media"                    # WooCommerce: media (the library) or url (WooCommerce fetches
                                        # the signed link: needs PRODUCT_STUDIO_PUBLIC_BASE_URL)
    publish = "on-approve"              # off (default), on-approve, auto: write variants back
    mode = "append"                     # append, or replace-main: the variant becomes the main image

Secrets are SecretStr: they print as '**********' and are never logged.
"""

from __future__ import annotations

import os
import re
import threading
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)

from ..config import Settings, get_settings
from ..errors import BadInput

Platform = Literal["shopify", "woocommerce", "bigcommerce", "generic"]
PublishWhen = Literal["off", "on-approve", "auto"]
PublishMode = Literal["append", "replace-main"]
_VERSION = re.compile(r"\d{4}-\d{2}|unstable")
PLATFORMS: tuple[str, ...] = ("shopify", "woocommerce", "bigcommerce", "generic")
DEFAULT_NAME = "default"


class Store(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=255)
    platform: Platform
    source: str | None = None
    secrets: tuple[SecretStr, ...] = Field(min_length=1)
    targets: tuple[str, ...] = Field(min_length=1)
    scenes: tuple[str, ...] = ()
    callback_url: str | None = None
    api_url: str | None = None
    api_token: SecretStr | None = None
    api_version: str | None = None  # Shopify's GraphQL Admin API version; None: settings.shopify_api_version
    publish: PublishWhen = "off"
    mode: PublishMode = "append"
    # WooCommerce: the REST API's consumer key and secret (wc/ routes only), and a WordPress user's
    # application password for the media library (wp/v2/media); `upload` says which way images go.
    consumer_key: SecretStr | None = None
    consumer_secret: SecretStr | None = None
    wp_user: str | None = None
    wp_app_password: SecretStr | None = None
    upload: Literal["media", "url"] | None = None  # None: media when an application password is set, else url

    @field_validator("api_version")
    @classmethod
    def _version(cls, value: str | None) -> str | None:
        if value is not None and not _VERSION.fullmatch(value):
            raise ValueError("an API version looks like 2026-10")
        return value

    @field_validator("source")
    @classmethod
    def _normal_source(cls, value: str | None) -> str | None:
        return normal_source(value) if value else None

    @field_validator("secrets")
    @classmethod
    def _no_empty_secret(cls, value: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        if any(not s.get_secret_value() for s in value):
            raise ValueError("a secret may not be empty")
        return value

    def secret_values(self) -> list[str]:
        return [s.get_secret_value() for s in self.secrets]

    def credentials(self) -> list[str]:
        """Every secret this store holds (webhook secrets, API credentials): what redact masks in
        anything shown or recorded about it."""
        found = self.secret_values()
        found += [v.get_secret_value() for v in (self.api_token, self.consumer_key, self.consumer_secret,
                                                 self.wp_app_password) if v is not None]
        return [v for v in found if v]

    def serves(self, source: str | None) -> bool:
        """Whether a delivery claiming to come from `source` may be this store's."""
        return self.source is None or (source is not None and normal_source(source) == self.source)


def normal_source(value: str) -> str:
    """Shop domains and site URLs compare without case, scheme or trailing slash."""
    value = value.strip().lower()
    for prefix in ("https://", "http://"):
        value = value.removeprefix(prefix)
    return value.rstrip("/")


@dataclass(frozen=True)
class Stores:
    by_platform: dict[str, tuple[Store, ...]]

    def candidates(self, platform: str, source: str | None, *, any_source: bool = False) -> tuple[Store, ...]:
        """The stores a delivery on `platform` from `source` may belong to; its signature says which.
        `any_source`: every store of the platform (its source is only known once the body is read)."""
        found = [s for s in self.by_platform.get(platform, ()) if any_source or s.serves(source)]
        return tuple(sorted(found, key=lambda s: s.source is None))  # a store named by its source first

    def named(self, platform: str, name: str | None) -> Store | None:
        return next((s for s in self.by_platform.get(platform, ()) if s.name == name), None)


def _split_secrets(secret: SecretStr) -> tuple[SecretStr, ...]:
    return tuple(SecretStr(s.strip()) for s in secret.get_secret_value().split(",") if s.strip())


def _defaults(settings: Settings) -> list[Store]:
    """The single-store defaults: one store per platform that has a secret in settings."""
    secrets = {"shopify": settings.shopify_webhook_secret, "woocommerce": settings.woocommerce_webhook_secret,
               "bigcommerce": settings.bigcommerce_webhook_secret, "generic": settings.generic_webhook_secret}
    out = []
    for platform, secret in secrets.items():
        if secret is None or not _split_secrets(secret):
            continue
        extra = {"publish": settings.publish, "mode": settings.publish_mode}
        if platform == "bigcommerce":
            extra |= {"api_url": settings.bigcommerce_api_url, "api_token": settings.bigcommerce_api_token,
                      "source": settings.bigcommerce_store_hash}
        if platform == "woocommerce":
            extra |= {"source": settings.woocommerce_site, "consumer_key": settings.woocommerce_consumer_key,
                      "consumer_secret": settings.woocommerce_consumer_secret, "wp_user": settings.woocommerce_wp_user,
                      "wp_app_password": settings.woocommerce_wp_app_password, "upload": settings.woocommerce_upload}
        if platform == "shopify":
            extra |= {"source": settings.shopify_shop, "api_url": settings.shopify_api_url,
                      "api_token": settings.shopify_access_token, "api_version": settings.shopify_api_version}
        out.append(Store(name=DEFAULT_NAME, platform=platform, secrets=_split_secrets(secret),
                         targets=tuple(settings.webhook_targets), scenes=tuple(settings.webhook_scenes),
                         callback_url=settings.webhook_callback_url, **extra))
    return out


def load_stores_file(path: Path, settings: Settings) -> list[Store]:
    try:
        raw = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise BadInput(f"stores file {path}: {exc}") from None
    out = []
    for i, entry in enumerate(raw.get("store", [])):
        label = f"stores file {path}: store #{i + 1}" + (f" ({entry['name']!r})" if "name" in entry else "")
        if entry.get("platform") == "bigcommerce":
            entry = {"api_url": settings.bigcommerce_api_url, **entry}
        try:
            out.append(Store(**entry))
        except ValidationError as exc:
            first = exc.errors()[0]  # never echo the input: it may be a secret
            raise BadInput(f"{label}: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    return out


def _check(stores: list[Store], settings: Settings) -> None:
    from ..presets import get_target
    from ..scenes import get_scene

    seen = set()
    for store in stores:
        key = (store.platform, store.name)
        if key in seen:
            raise BadInput(f"two {store.platform} stores are named {store.name!r}")
        seen.add(key)
        try:
            for t in store.targets:
                get_target(t)
            for scene in store.scenes:
                get_scene(scene, settings)
        except BadInput as exc:
            raise BadInput(f"{store.platform} store {store.name!r}: {exc}") from None


_cache: dict[int, tuple[Settings, tuple, Stores]] = {}
_lock = threading.Lock()


def stores(settings: Settings | None = None) -> Stores:
    """The configured stores, read once per settings object (again when the stores file changes)."""
    settings = settings or get_settings()
    path = settings.stores_file
    stamp = (str(path), os.stat(path).st_mtime_ns) if path and Path(path).exists() else (str(path),)
    with _lock:
        hit = _cache.get(id(settings))
        if hit and hit[0] is settings and hit[1] == stamp:
            return hit[2]
    found = _defaults(settings) + (load_stores_file(path, settings) if path else [])
    _check(found, settings)
    result = Stores({p: tuple(s for s in found if s.platform == p) for p in PLATFORMS})
    with _lock:
        _cache[id(settings)] = (settings, stamp, result)
    return result
