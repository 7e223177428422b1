"""Names from untrusted text: folder and file stems, labels in messages, unique suffixes.

Every door names outputs with these (the CLI's photo folders, uploads, batch products, download
file names), so a name that is safe in one door is safe in all of them.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import PurePosixPath
from urllib.parse import urlsplit

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
MAX_NAME = 100  # characters


def is_url(text: str) -> bool:
    """Whether `text` starts with a URL scheme (`http://`, `ftp://`, ...)."""
    return bool(_URL.match(text))


def safe_name(text: str, fallback: str = "product") -> str:
    """A folder or file name from untrusted text: letters, digits, '-', '_', '.' only (NFKC
    normalised, runs of '_' folded), at most MAX_NAME characters, never hidden, never a path."""
    text = unicodedata.normalize("NFKC", text)
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in text)
    name = re.sub(r"_{2,}", "_", name).strip("._-")[:MAX_NAME].rstrip("._-")
    return name or fallback


def stem(location: str) -> str:
    """The stem of a file name, path or URL ("a/b/cup.v2.jpg" and "https://x/cup.jpg?s=1" -> "cup.v2",
    "cup"); backslashes count as separators (Windows names in uploads)."""
    path = urlsplit(location).path if is_url(location) else location
    return PurePosixPath(path.replace("\\", "/")).stem


def safe_stem(filename: str, fallback: str = "upload") -> str:
    """The output stem for an uploaded or local file name: no directories, no dot files."""
    return safe_name(stem(filename), fallback)


def display_label(name: str, fallback: str = "upload") -> str:
    """A name as shown in messages: one line (unprintable characters become spaces), at most 200."""
    return "".join(c if c.isprintable() else " " for c in name)[:200] or fallback


def unique_names(names: list[str]) -> list[str]:
    """The names in order, a repeated one suffixed "-2", "-3"... (["a", "a", "b"] -> ["a", "a-2", "b"])."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}-{seen[name]}")
    return out
