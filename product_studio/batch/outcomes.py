"""What one item's work comes to: its files (Rendered, each an OutputFile) or why it Failed; and the
report names in OUT that no product folder may take. The small types every batch module shares.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass

from ..errors import ProductStudioError

REPORTS = ("manifest.csv", "failures.csv", "summary.json")  # written into OUT beside the product folders


@dataclass(frozen=True)
class OutputFile:
    """One file in an item's folder, as the manifest describes it."""

    name: str
    target: str  # export target, or "cutout" / "control"
    width: int
    height: int
    bytes: int
    check: str = ""  # "pass" or the failing rules; "" for cutout and control
    seed: int | None = None
    warnings: str = ""  # what the check noticed without failing (an enlargement)
    confidence: float | None = None  # the cut-out's (on the "cutout" file only)
    review: str = ""  # why the cut-out needs review, "" when it does not (on the "cutout" file only)
    sha256: str = ""  # of the file's bytes ("" in journals written before it was recorded)

    @property
    def check_failed(self) -> bool:
        return bool(self.check) and self.check != "pass"


@dataclass(frozen=True)
class Rendered:
    files: tuple[OutputFile, ...]


@dataclass(frozen=True)
class Failed:
    reason: str
    exit_code: int = 1
    stage: str = "process"
    detail: str | None = None  # a traceback for unexpected errors: kept in the journal, not the CSV


def as_failure(exc: BaseException, label: str, stage: str) -> Failed:
    """An exception as an item's failure (its exit code kept; a traceback for unexpected ones)."""
    if isinstance(exc, ProductStudioError):
        return Failed(str(exc), exc.exit_code, stage)
    # A bug must not stop a catalogue of thousands: it is recorded against its item.
    return Failed(f"{label}: unexpected {type(exc).__name__}: {exc}", 1, stage, traceback.format_exc())

