"""The retry delay every retried thing uses (tasks, webhook intake, completion callbacks).

Exponential backoff, capped: 1, 2, 4, 8... seconds up to `cap`. Celery adds no jitter of its
own to a countdown; the attempts of different tasks are spread by their different start times.
"""

from __future__ import annotations


def delay(attempt: int, cap: float = 60.0) -> float:
    """Seconds to wait before retry number `attempt` (0 = the first retry): min(cap, 2**attempt)."""
    return float(min(cap, 2 ** attempt))
