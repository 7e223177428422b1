"""Lost work, found from the database; and which errors a retry cannot fix."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from .. import runtime
from ..config import Settings, get_settings
from ..errors import ProductStudioError
from ..models import STAGE_FINAL, Variant, utcnow
from .steps import Step, cutouts


def stale_assets(older_than: float, settings: Settings | None = None) -> list[Step]:
    """Cut-out steps for assets with unsettled variants untouched for `older_than` seconds: their
    messages were lost (a killed worker, a broker restarted without persistence). Each is claimed
    by bumping its variants' updated_at, so concurrent sweepers do not both re-enqueue it."""
    db = runtime.database(settings or get_settings())
    cutoff = utcnow() - timedelta(seconds=older_than)
    with db.session() as s:
        rows = s.execute(select(Variant.asset_id, Variant.id, Variant.updated_at)
                         .where(Variant.status.not_in(STAGE_FINAL), Variant.updated_at < cutoff)).all()
        claimed = set()
        for asset_id, vid, seen in rows:
            bumped = s.execute(update(Variant).where(Variant.id == vid, Variant.updated_at == seen)
                               .values(updated_at=utcnow()).execution_options(synchronize_session=False))
            if bumped.rowcount == 1:
                claimed.add(asset_id)
        return cutouts(sorted(claimed))


def is_permanent(exc: BaseException) -> bool:
    """Errors a retry cannot fix (bad input, a missing model): record them as failed at once."""
    return isinstance(exc, ProductStudioError) and not exc.retryable
