"""Catalog batches: a folder, a glob or a product CSV in; one folder per product, a manifest, a
summary and a failures file out. The CLI's `batch` command is a thin door onto `run_batch`.

    catalogue = read_source("products.csv")               # Shopify export or image,sku,title,category
    summary = run_batch(catalogue, Path("out"), BatchOptions(targets=("amazon-main",), jobs=2))

The unit of work is an *item*: one image of one product. Its outputs go to OUT/<product>/ (or
OUT/<product>/<n>/ when the product has several images), built aside and swapped in whole. Only then
is the item appended to a journal (OUT/.batch/journal.jsonl, one fsynced line per item), so a crash
or Ctrl-C never leaves a half-written folder counted as done, and the next run with the same OUT
skips what the journal says is finished. Identical images (same SHA-256) are processed once; the
other products that use them get copies of the finished files.

Work runs in this process (--jobs 1), in N spawned worker processes that each load the cut-out model
once (--jobs N), or on Celery workers (via_celery: submitted through jobs.submit and enqueued by the
batch, waited for by polling the database, copied out of the blob store).

One module per job: sources (reading the catalogue), journal (OUT's journal, lock and cleanup),
engines (the three ways to render, and the worker function), report (summary, report files,
progress), run (options and the orchestration); outcomes holds the small types they share.
"""

from .engines import RenderJob, render
from .journal import Journal
from .outcomes import Failed, OutputFile, Rendered
from .report import BatchSummary, Reporter, RichReporter, summary_table
from .run import BatchOptions, run_batch
from .sources import Catalogue, Item, read_csv, read_source

__all__ = ["BatchOptions", "BatchSummary", "Catalogue", "Failed", "Item", "Journal", "OutputFile", "RenderJob",
           "Rendered", "Reporter", "RichReporter", "read_csv", "read_source", "render", "run_batch",
           "summary_table"]
