"""Publications whose message was lost (a publish after the commit that failed, a Redis restarted
without persistence) or whose worker died mid-publish (its lease expired): the worker's sweeper
thread (tasks/sweeper.py) enqueues them again. The publish task itself is in tasks/pipeline.py."""

from __future__ import annotations

import logging

from product_studio.publish.service import lost_publications

from .pipeline import enqueue
from .sweeper import SWEEPS

log = logging.getLogger(__name__)


def sweep_publications(older_than: float) -> int:
    steps = lost_publications(older_than)
    if steps:
        log.warning("re-enqueueing %d publication(s) whose messages were lost", len(steps))
        enqueue(steps)
    return len(steps)


SWEEPS.append(sweep_publications)
