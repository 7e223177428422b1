"""Media types of the files we write, and the file extension each is downloaded under.

One table for storage (the Content-Type a blob is stored with), downloads (the extension of a
variant's file name) and the API's documented responses. Types are IANA's (RFC 2046, RFC 9649
for WebP).
"""

from __future__ import annotations

BY_EXTENSION = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
EXTENSIONS = {ctype: ext for ext, ctype in BY_EXTENSION.items()}
JPEG, PNG = BY_EXTENSION["jpg"], BY_EXTENSION["png"]


def for_extension(extension: str) -> str:
    """The media type for an output extension ("jpg" -> "image/jpeg"); raises KeyError for
    an extension we never write."""
    return BY_EXTENSION[extension]


def extension_for(content_type: str | None) -> str:
    """The file extension for a stored media type; "bin" for an unknown or missing one."""
    return EXTENSIONS.get(content_type or "", "bin")
