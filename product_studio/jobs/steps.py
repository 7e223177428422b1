"""What should happen next, as data: the core returns Steps, the task layer enqueues them."""

from __future__ import annotations

from typing import NamedTuple


class Step(NamedTuple):
    """One unit of work to run: `stage` is "cutout", "edges" (the control images), "variant" or
    "callback", `id` the asset, variant or job it is for; `gpu` when it must run on a GPU worker
    (a generative variant)."""

    stage: str
    id: str
    gpu: bool = False


def cutouts(asset_ids: list[str]) -> list[Step]:
    return [Step("cutout", a) for a in asset_ids]


def callback(job_id: str | None) -> list[Step]:
    """The completion callback's step when `job_id` (a job just finished) is given, else none."""
    return [Step("callback", job_id)] if job_id else []
