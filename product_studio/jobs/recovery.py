"""Lost work, found from the database; and which errors a retry cannot fix.

What the sweeper (tasks/sweeper.py) takes back, and what it leaves alone:
- a RUNNING variant is leased to the worker rendering it, which renews the lease; only an expired
  lease (the worker died, or hangs without renewing) is taken back and enqueued again;
- PENDING work (a photo's cut-out or edges, or a variant) waits in the broker, for as long as the
  backlog ahead of it takes: it is enqueued again only when it has been untouched for
  `older_than` seconds *and* the broker holds nothing on its queue (`waiting` says so). A live
  worker touches the work whose messages it holds (reserved, waiting for a retry's countdown, or
  running: `keep_alive`, every sweep), so untouched work whose queue is empty has lost its
  message (a worker killed on the embedded broker, a Redis restarted without persistence);
- a completion callback owed (db.maybe_finish_job records it with the job's end) and not tried
  for `older_than` seconds past its due time.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import select, update

from .. import runtime
from ..config import Settings, get_settings
from ..db import due_callbacks as _due_callbacks
from ..db import take_back_expired
from ..errors import ProductStudioError, classify
from ..models import Asset, StageStatus, Variant, utcnow
from .steps import Step
from .units import variant_step


def keep_alive(steps: list[Step], settings: Settings | None = None) -> int:
    """Touch the work behind `steps` ("cutout", "edges" or "variant" Steps whose messages a live
    worker holds but has not finished): their pending variants' updated_at is set to now, so no
    sweeper takes them for lost for another `older_than` seconds. Returns the rows touched;
    other stages are ignored. Raises what the database raises."""
    variant_ids = [st.id for st in steps if st.stage == "variant"]
    asset_ids = [st.id for st in steps if st.stage in ("cutout", "edges")]
    if not variant_ids and not asset_ids:
        return 0
    db = runtime.database(settings or get_settings())
    touched = 0
    with db.session() as s:
        for column, ids in ((Variant.id, variant_ids), (Variant.asset_id, asset_ids)):
            if ids:
                touched += s.execute(update(Variant).where(column.in_(ids), Variant.status == StageStatus.PENDING)
                                     .values(updated_at=utcnow()).execution_options(synchronize_session=False)).rowcount
    return touched


def lost_work(older_than: float, waiting: Callable[[Step], bool] | None = None,
              settings: Settings | None = None) -> list[Step]:
    """The Steps that redo lost work: every variant whose lease expired (set back to pending), and
    pending work untouched for `older_than` seconds whose queue holds nothing according to
    `waiting(step)` (True: the broker still holds messages on that step's queue, so the work is
    presumed in line there; None: never presumed, everything untouched is taken, for callers that
    cannot ask a broker). A pending photo whose cut-out or edges are not done gets that stage's
    step (the stages chain to its variants); otherwise each pending variant gets its own.

    Concurrent sweepers each take an item at most once: an item is taken by bumping its
    variants' updated_at, conditional on the value read. Raises what the database raises."""
    settings = settings or get_settings()
    db = runtime.database(settings)
    now = utcnow()
    cutoff = now - timedelta(seconds=older_than)
    steps: list[Step] = []
    with db.session() as s:
        for vid in take_back_expired(s, now=now):
            v = s.get_one(Variant, vid)
            steps.append(_variant_step(vid, v.target, v.scene, settings))
        rows = s.execute(
            select(Variant.id, Variant.asset_id, Variant.target, Variant.scene, Variant.updated_at,
                   Asset.cutout_status, Asset.edges_status)
            .join(Asset)
            .where(Variant.status == StageStatus.PENDING, Variant.updated_at < cutoff)
            .order_by(Asset.job_id, Asset.position, Variant.created_at)
        ).all()
        by_asset = defaultdict(list)
        for row in rows:
            by_asset[row.asset_id].append(row)
        for asset_id, variants in by_asset.items():
            first = variants[0]
            if first.cutout_status != StageStatus.DONE:
                candidates = [(Step("cutout", asset_id), variants)]
            elif first.edges_status != StageStatus.DONE:
                candidates = [(Step("edges", asset_id), variants)]
            else:
                candidates = [(_variant_step(v.id, v.target, v.scene, settings), [v]) for v in variants]
            for step, held in candidates:
                if waiting is not None and waiting(step):
                    continue
                taken = sum(s.execute(update(Variant).where(Variant.id == v.id, Variant.updated_at == v.updated_at)
                                      .values(updated_at=now).execution_options(synchronize_session=False)).rowcount
                            for v in held)
                if taken:
                    steps.append(step)
    return steps


def _variant_step(variant_id: str, target: str, scene: str, settings: Settings) -> Step:
    try:
        return variant_step(variant_id, target, scene, settings)
    except ProductStudioError:  # a target or scene no longer known: the task records the failure
        return Step("variant", variant_id)


def due_callbacks(older_than: float, settings: Settings | None = None) -> list[Step]:
    """Callback Steps for jobs whose completion callback has been owed, untried, for more than
    `older_than` seconds past its due time (its message was never published, or lost); each is
    taken by one sweeper only (db.due_callbacks). Raises what the database raises."""
    db = runtime.database(settings or get_settings())
    with db.session() as s:
        return [Step("callback", job_id) for job_id in _due_callbacks(s, older_than)]


def is_permanent(exc: BaseException) -> bool:
    """Errors a retry cannot fix (bad input, a missing model, input too deeply nested or not
    decodable: errors.classify): record them as failed at once."""
    return not classify(exc).retryable
