"""Export targets: canvas, fill, background, format and the marketplace rules they must pass.

Numbers and their sources are in DESIGN.md ("Export targets"). Targets are data: a store can
read them with `product-studio targets`, and `check` validates any file against them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from .errors import UnknownName

MB = 1024 * 1024


class Target(BaseModel, frozen=True):
    name: str
    title: str
    width: int
    height: int
    # Layout: the product's longer side spans this share of the canvas (white targets keep
    # a margin over `min_fill` so JPEG edge softness never drops a variant below the rule).
    fill: float = Field(0.9, gt=0, le=1)
    align: Literal["center", "bottom"] = "center"
    # "white": pure 255 background, no shadows. "scene": a scene backend paints it.
    background: Literal["white", "scene"] = "white"
    default_scene: str = "studio"
    shadows: bool = False
    format: Literal["jpeg", "png", "webp"] = "jpeg"
    quality: int = Field(92, ge=1, le=100)
    # Rules `check` enforces.
    min_fill: float | None = None
    min_long_side: int | None = None
    max_long_side: int | None = None
    max_pixels: int | None = None
    max_bytes: int | None = None
    square: bool = False
    # The long side this image would have at the source photo's own resolution (long side /
    # enlargement, Placement.scale) must be at least this: upscaling adds pixels, not detail.
    # Only the pipeline knows the enlargement; `check` on a plain file cannot judge it. Every
    # target warns above check.ENLARGEMENT_WARNING (1.5x) whatever this says.
    min_source_long_side: int | None = None
    formats: tuple[str, ...] = ("jpeg", "png", "webp")
    source: str = ""

    @property
    def pure_white(self) -> bool:
        return self.background == "white"

    @property
    def extension(self) -> str:
        return {"jpeg": "jpg", "png": "png", "webp": "webp"}[self.format]

    def rules(self) -> list[str]:
        """Human-readable rules, as `product-studio targets` prints them."""
        out = [f"{self.width}x{self.height} px" + (" (1:1)" if self.square else "")]
        if self.pure_white:
            out.append("background pure white 255,255,255")
        optional = (
            (self.min_fill, "product spans >= {:.0%} of the frame"),
            (self.min_long_side, "long side >= {} px"),
            (self.min_source_long_side, "long side >= {} px at the photo's own resolution (not by enlarging)"),
            (self.max_long_side, "long side <= {} px"),
            (self.max_pixels and self.max_pixels / 1e6, "<= {:g} MP"),
            (self.max_bytes and self.max_bytes / MB, "<= {:g} MB"),
        )
        out += [text.format(value) for value, text in optional if value]
        out.append("formats " + "/".join(self.formats))
        return out


# min_source_long_side: amazon-main refuses less real detail than the smallest image Amazon takes.
# The others warn about an enlargement over 1.5x but do not fail it: Walmart's, eBay's and Google's
# minimums are file dimensions their own checks measure, Shopify has none, and Etsy and lifestyle
# are scene pictures. A store that wants more sets its own targets.
TARGETS: dict[str, Target] = {
    t.name: t
    for t in [
        Target(
            name="amazon-main", title="Amazon main image", width=2000, height=2000, fill=0.9, min_fill=0.85,
            min_long_side=1000, max_long_side=10000, max_bytes=10 * MB, square=True, quality=92,
            # Amazon takes nothing under 500 px on the longest side (1000 px is what enables
            # zoom). A smaller photo blown up to 2000 px has the pixels, not the detail: refused.
            # Between 500 and 1000 px of real detail it passes with the enlargement warning.
            min_source_long_side=500,
            formats=("jpeg", "png"),
            source="Seller Central G9FUUH87RBNXGKB7; Amazon image guide (>= 500 px on the longest side, "
                   "1000 px or larger enables zoom)",
        ),
        Target(
            name="walmart-main", title="Walmart main image", width=2200, height=2200, fill=0.9, min_fill=0.85,
            min_long_side=1500, max_bytes=5 * MB, square=True, quality=90,
            formats=("jpeg", "png"), source="Walmart Marketplace Learn image guidelines",
        ),
        Target(
            name="shopify-square", title="Shopify product image", width=2048, height=2048, fill=0.9, min_fill=0.85,
            max_long_side=4472, max_pixels=20_000_000, square=True,
            formats=("jpeg", "png", "webp"), source="shopify.dev product media",
        ),
        Target(
            name="ebay", title="eBay listing photo", width=1600, height=1600, fill=0.9, min_fill=0.85, min_long_side=500,
            max_bytes=12 * MB, formats=("jpeg", "png", "webp"), source="eBay picture policy",
        ),
        Target(
            name="etsy", title="Etsy listing photo", width=2000, height=1600, fill=0.7, align="bottom",
            background="scene", shadows=True, min_long_side=2000, max_bytes=20 * MB,
            formats=("jpeg", "png"), source="Etsy seller handbook (secondary sources)",
        ),
        Target(
            name="google-shopping", title="Google Merchant Center image", width=1500, height=1500, fill=0.9,
            min_fill=0.85,
            min_long_side=500, max_pixels=64_000_000, max_bytes=16 * MB, square=True,
            formats=("jpeg", "png", "webp"), source="Merchant Center image requirements",
        ),
        Target(
            name="lifestyle", title="Social / lifestyle 4:5", width=1080, height=1350, fill=0.62, align="bottom",
            background="scene", shadows=True, formats=("jpeg", "png", "webp"), source="Instagram feed 4:5",
        ),
    ]
}


def get_target(name: str) -> Target:
    try:
        return TARGETS[name]
    except KeyError:
        raise UnknownName("target", name, list(TARGETS)) from None
