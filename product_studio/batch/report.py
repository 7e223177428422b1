"""What a batch tells: the BatchSummary, the reports written into OUT (manifest.csv, failures.csv,
summary.json), the Reporter progress callbacks with the CLI's RichReporter, and the printed
summary_table.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..config import get_settings
from ..errors import TransientError
from ..files import atomic_write_bytes
from ..redact import known_secrets, redact
from .outcomes import REPORTS, Failed, OutputFile, Rendered
from .sources import Catalogue, Item

# source_sha256: the input photo's bytes (identical photos share it); sha256: the output file's bytes.
MANIFEST_COLUMNS = ("source", "product", "image", "target", "path", "size", "bytes", "check", "warnings", "confidence",
                    "needs_review", "seed", "source_sha256", "sha256")
FAILURE_COLUMNS = ("source", "product", "image", "kind", "target", "reason", "exit_code")
INTERRUPTED = 130  # the shell's code for a process stopped by SIGINT


class Reporter:
    """Progress callbacks; the CLI draws a bar, tests and the bench need none."""

    def start(self, total: int, done: int) -> None: ...

    def advance(self, item: Item, outcome: Rendered | Failed) -> None: ...

    def note(self, message: str) -> None: ...

    def stop(self) -> None: ...


@dataclass
class BatchSummary:
    source: str
    out: str
    mode: str
    items: int = 0  # images in the catalogue
    products: int = 0
    done: int = 0  # items finished, this run or before
    resumed: int = 0  # ...of which an earlier run finished
    processed: int = 0  # unique images rendered this run
    deduped: int = 0  # items this run filled with copies of an identical image's files
    failed: int = 0
    check_failed: int = 0  # variants made but failing their target's rules
    needs_review: int = 0  # items whose cut-out's confidence is below the review threshold
    skipped: int = 0  # rows without an image, non-image files in a folder
    repeats: int = 0  # rows naming an image their product already has (taken once)
    products_done: int = 0  # products with every image finished, at least one of them this run
    seconds: float = 0.0
    products_per_minute: float | None = None  # None when this run finished no product (all resumed)
    interrupted: bool = False
    error: str | None = None  # why the run stopped early (no Celery worker)
    exit_code: int = 0
    reports: dict[str, str] = field(default_factory=dict)


def write_reports(out: Path, catalogue: Catalogue, records: dict[str, dict], key_of: Callable[[Item], str],
                  valid: set[str], touched: set[str], summary: BatchSummary) -> None:
    """manifest.csv, failures.csv and summary.json from the journal: every item of the catalogue
    once, as it stands now (this run's results and the earlier runs' still valid ones). Every
    text written is redacted (product_studio/redact.py): no URL password, credential parameter or
    configured secret reaches a file."""
    s = summary
    manifest, failures, codes = [], [], []
    done_by_product: dict[str, int] = {}
    for item in catalogue.items:
        key = key_of(item)
        record = records.get(key)
        where = {"source": item.source, "product": item.product, "image": item.image}
        if key in valid:
            done_by_product[item.product] = done_by_product.get(item.product, 0) + 1
            files = [OutputFile(**f) for f in record["files"]]
            cut = next((f for f in files if f.target == "cutout"), None)
            review = cut.review if cut else ""
            s.needs_review += bool(review)
            photo = {"confidence": "" if cut is None or cut.confidence is None else f"{cut.confidence:.3f}",
                     "needs_review": review}
            for f in files:
                manifest.append(where | photo | {"target": f.target, "path": f"{item.folder}/{f.name}",
                                                 "size": f"{f.width}x{f.height}", "bytes": f.bytes, "check": f.check,
                                                 "warnings": f.warnings, "seed": "" if f.seed is None else f.seed,
                                                 "source_sha256": record["sha256"], "sha256": f.sha256})
                if f.check_failed:
                    failures.append(where | {"kind": "check", "target": f.target, "reason": f.check,
                                             "exit_code": 1})
                    codes.append(1)
        elif record and record["status"] == "failed":
            failures.append(where | {"kind": record["stage"], "target": "", "reason": record["reason"],
                                     "exit_code": record["exit_code"]})
            codes.append(record["exit_code"])
    s.done = sum(done_by_product.values())
    s.failed = sum(1 for f in failures if f["kind"] != "check")
    s.check_failed = sum(1 for f in failures if f["kind"] == "check")
    images = {item.product: item.images for item in catalogue.items}
    s.products_done = sum(1 for p in touched if done_by_product.get(p) == images[p])
    s.products_per_minute = 60 * s.products_done / s.seconds if s.seconds > 0 and s.products_done else None
    s.exit_code = max([0, *codes, TransientError.exit_code if s.error else 0])
    if s.interrupted:
        s.exit_code = INTERRUPTED
    s.reports = {name: str(out / name) for name in REPORTS}
    secrets = known_secrets(get_settings())
    atomic_write_bytes(out / "manifest.csv", _csv(MANIFEST_COLUMNS, manifest, secrets))
    atomic_write_bytes(out / "failures.csv", _csv(FAILURE_COLUMNS, failures, secrets))
    atomic_write_bytes(out / "summary.json",
                       json.dumps(_redacted(dataclasses.asdict(s), secrets), indent=2).encode() + b"\n")


def _redacted(value, secrets: list[str]):
    """`value` (str, or dicts and lists of them) with credentials masked (product_studio/redact.py):
    a broker URL quoted in an error, a CSV's presigned image URL."""
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, dict):
        return {k: _redacted(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(v, secrets) for v in value]
    return value


def _csv(columns: tuple[str, ...], rows: list[dict], secrets: list[str]) -> bytes:
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(_redacted(rows, secrets))
    return buf.getvalue().encode()


class RichReporter(Reporter):
    """A progress bar with ETA and the failure count; one line per failure above it."""

    def __init__(self, console):
        self.console = console
        self.failed = 0

    def start(self, total: int, done: int) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("[red]{task.fields[failed]} failed"), TimeElapsedColumn(),
                                 TextColumn("ETA"), TimeRemainingColumn(), console=self.console, transient=True)
        self.progress.start()
        self.task = self.progress.add_task("batch", total=total, completed=done, failed=0)
        if done:
            self.progress.console.print(f"resuming: {done} of {total} image(s) already done", highlight=False)

    def advance(self, item: Item, outcome: Rendered | Failed) -> None:
        from rich.markup import escape

        if isinstance(outcome, Failed):
            self.failed += 1
            self.progress.console.print(f"[red]error:[/red] {escape(outcome.reason)}", highlight=False,
                                        soft_wrap=True)
        self.progress.update(self.task, advance=1, failed=self.failed)

    def note(self, message: str) -> None:
        self.progress.console.print(f"[yellow]{message}[/yellow]", highlight=False)

    def stop(self) -> None:
        if hasattr(self, "progress"):
            self.progress.stop()


def summary_table(s: BatchSummary):
    """The printed summary: what was made, what failed, where the reports are (credentials in
    the source, the paths or the error masked, as in the reports)."""
    from rich.markup import escape
    from rich.table import Table

    s = dataclasses.replace(s, **_redacted({"source": s.source, "out": s.out, "error": s.error,
                                            "reports": s.reports}, known_secrets(get_settings())))
    table = Table(title=escape(f"batch {s.source} -> {s.out} ({s.mode})"), show_header=False)
    table.add_column(justify="left")
    table.add_column(justify="right")
    rows = [("images", s.items), ("products", s.products), ("done", f"{s.done} ({s.resumed} by an earlier run)"),
            ("processed this run", s.processed), ("copied from identical images", s.deduped),
            ("failed", f"[red]{s.failed}[/red]" if s.failed else 0),
            ("variants failing their checks", f"[red]{s.check_failed}[/red]" if s.check_failed else 0),
            ("photos whose cut-out needs review", f"[yellow]{s.needs_review}[/yellow]" if s.needs_review else 0),
            ("rows / files skipped (no image)", s.skipped),
            ("repeated images in a product (taken once)", s.repeats),
            ("time", f"{s.seconds:.1f} s"), ("products per minute", "-" if s.products_per_minute is None else f"{s.products_per_minute:.1f}")]
    for name, value in rows:
        table.add_row(name, str(value))
    for name, path in s.reports.items():
        table.add_row(name, escape(path))
    return table
