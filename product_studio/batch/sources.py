"""Reading the catalogue: a folder, a glob, a single image, a Shopify product export or a plain
image,sku,title,category CSV in; the items (one image of one product each) out, every product
given one safe, unique folder name.
"""

from __future__ import annotations

import csv
import glob
import io
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import BadInput
from ..naming import is_url, safe_name, stem
from .outcomes import REPORTS

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif", ".avif", ".heic", ".heif"})


@dataclass(frozen=True)
class Item:
    """One image of one product."""

    product: str  # sanitised: the product's folder name
    image: int  # 1-based order among the product's images
    images: int  # how many images the product has
    source: str  # as written in the input (path or URL): shown in messages and the manifest
    path: Path | None = None  # a local file...
    url: str | None = None  # ...or an http(s) URL
    title: str | None = None
    category: str | None = None
    error: str | None = None  # a row that can never be processed (an empty image cell, an ftp:// URL)

    @property
    def folder(self) -> str:
        """The item's output folder, relative to OUT."""
        return self.product if self.images == 1 else f"{self.product}/{self.image}"

    @property
    def location(self) -> str:
        if self.path is not None:
            return os.path.abspath(self.path)  # the same file, wherever the command is run from
        return self.url or self.source


@dataclass(frozen=True)
class Catalogue:
    source: str
    kind: str  # "folder", "glob", "file", "shopify-csv", "csv"
    items: tuple[Item, ...]
    skipped: int = 0  # rows without an image (Shopify variant rows), non-image files in a folder
    repeats: int = 0  # rows naming an image their product already has (taken once)

    @property
    def products(self) -> int:
        return len({i.product for i in self.items})


@dataclass
class _Row:
    """A source image before product names are given out."""

    product_id: str | None  # sku / Handle: rows sharing one are one product's images
    source: str
    path: Path | None = None
    url: str | None = None
    title: str | None = None
    category: str | None = None
    order: float = math.inf  # Shopify's Image Position; ties keep row order
    error: str | None = None


def _make_items(rows: list[_Row]) -> tuple[Item, ...]:
    """Group rows into products (in order of first appearance), name each product once, uniquely."""
    groups: dict[Any, list[_Row]] = {}
    for n, row in enumerate(rows):
        groups.setdefault(row.product_id if row.product_id else ("row", n), []).append(row)
    taken = {r.casefold() for r in REPORTS}  # case-insensitive: macOS and Windows folders are
    items = []
    for members in groups.values():
        members.sort(key=lambda r: r.order)  # stable: equal positions keep row order
        first = members[0]
        base = safe_name(first.product_id or stem(first.source))
        name, n = base, 1
        while name.casefold() in taken:
            n += 1
            name = f"{base}-{n}"
        taken.add(name.casefold())
        title = next((r.title for r in members if r.title), None)
        category = next((r.category for r in members if r.category), None)
        for k, r in enumerate(members, 1):
            items.append(Item(name, k, len(members), r.source, r.path, r.url, title, category, r.error))
    return tuple(items)


def read_source(source: str) -> Catalogue:
    """A folder (its image files), a glob, a CSV (Shopify product export or image,sku,title,category)
    or a single image file."""
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
        if not images:
            raise BadInput(f"{source}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in this folder")
        return Catalogue(source, "folder", _file_items(images), skipped=len(files) - len(images))
    if path.is_file():
        if path.suffix.lower() == ".csv":
            return read_csv(path)
        return Catalogue(source, "file", _file_items([path]))
    if any(c in source for c in "*?["):
        matches = sorted(Path(p) for p in glob.glob(source, recursive=True) if Path(p).is_file())
        if not matches:
            raise BadInput(f"{source}: no files match this pattern")
        return Catalogue(source, "glob", _file_items(matches))
    raise BadInput(f"{source}: no such file or folder")


def _file_items(paths: list[Path]) -> tuple[Item, ...]:
    return _make_items([_Row(None, str(p), path=p) for p in paths])


def _resolve(cell: str, base: Path) -> tuple[Path | None, str | None, str | None]:
    """(path, url, error) for an image cell: an http(s) URL, or a path relative to the CSV's folder."""
    if is_url(cell):
        if urlsplit(cell).scheme.lower() in ("http", "https"):
            return None, cell, None
        return None, None, f"{cell}: only http(s) URLs and local paths are supported"
    return base / cell, None, None


def read_csv(path: Path) -> Catalogue:
    """A Shopify product export (detected by its Handle and Image Src columns) or a plain
    image,sku,title,category CSV. Errors name the file and, for a row, its line."""
    try:
        text = path.read_bytes().decode("utf-8-sig")  # Excel and Shopify exports may start with a BOM
    except OSError as exc:
        raise BadInput(f"{path}: cannot read the file ({exc.strerror or type(exc).__name__})") from None
    except UnicodeDecodeError as exc:
        raise BadInput(f"{path}: not UTF-8 text (byte {exc.start}); save the CSV as UTF-8") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        raise BadInput(f"{path}: empty file, expected a header row") from None
    except csv.Error as exc:
        raise BadInput(f"{path}: not a readable CSV ({exc})") from None
    columns = {name: i for i, name in reversed(list(enumerate(header)))}  # first of a repeated name

    def records() -> Iterator[tuple[int, dict[str, str]]]:
        try:
            for cells in reader:
                if any(c.strip() for c in cells):
                    yield reader.line_num, {k: cells[i].strip() if i < len(cells) else "" for k, i in columns.items()}
        except csv.Error as exc:
            raise BadInput(f"{path}, line {reader.line_num}: {exc}") from None

    if "handle" in columns and "image src" in columns:
        rows, skipped, repeats = _shopify_rows(records(), path.parent)
        return Catalogue(str(path), "shopify-csv", _make_items(rows), skipped, repeats)
    if "image" not in columns:
        raise BadInput(f"{path}: no 'image' column (found: {', '.join(h for h in header if h) or 'none'}); "
                       "expected image,sku,title,category or a Shopify product export (Handle, Image Src, ...)")
    return Catalogue(str(path), "csv", _make_items(_plain_rows(records(), path)))


def _plain_rows(records: Iterator[tuple[int, dict[str, str]]], csv_path: Path) -> list[_Row]:
    rows = []
    for line, r in records:
        sku = r.get("sku") or None
        cell = r["image"]
        if cell:
            p, url, error = _resolve(cell, csv_path.parent)
        else:
            p, url, error = None, None, f"{csv_path.name}, line {line}: the image cell is empty"
        rows.append(_Row(sku, cell or f"{csv_path.name}:{line}", p, url, r.get("title") or None,
                         r.get("category") or None, error=error))
    return rows


def _shopify_rows(records: Iterator[tuple[int, dict[str, str]]], base: Path) -> tuple[list[_Row], int, int]:
    """Shopify repeats a product's Handle on every row; only its first row has the Title (and Type),
    and variant rows have no Image Src (skipped). A product's image named again (a variant's own
    image that is also a product image) is taken once. Returns (rows, skipped, repeats)."""
    rows, skipped, repeats, seen = [], 0, 0, set()
    titles: dict[str, str] = {}
    categories: dict[str, str] = {}
    for _, r in records:
        handle, src = r["handle"], r["image src"]
        if handle and r.get("title"):
            titles.setdefault(handle, r["title"])
        category = r.get("type") or r.get("product category")
        if handle and category:
            categories.setdefault(handle, category)
        if not src:
            skipped += 1
            continue
        if (handle, src) in seen:
            repeats += 1
            continue
        seen.add((handle, src))
        p, url, error = _resolve(src, base)
        position = r.get("image position", "")
        order = float(position) if position.isdigit() else math.inf
        rows.append(_Row(handle or None, src, p, url, order=order, error=error))
    for row in rows:
        row.title, row.category = titles.get(row.product_id or ""), categories.get(row.product_id or "")
    return rows, skipped, repeats

