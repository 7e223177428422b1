"""The completion callback: a signed POST of the finished job's document to its callback URL."""

from __future__ import annotations

import json

from .. import runtime
from ..callbacks import HEADER, sign
from ..config import Settings, get_settings
from ..db import log_callback
from ..errors import BadInput
from ..models import JOB_FINAL, Job
from .documents import job_document


def deliver_callback(job_id: str, attempt: int, settings: Settings | None = None) -> bool:
    """POST the signed completion document (callbacks.sign, header X-Product-Studio-Signature) to
    the job's callback URL and log the attempt. True when settled (delivered with a 2xx, nothing
    to send, or an address that is refused), False when it should be retried."""
    import httpx

    from ..fetch import check_url

    settings = settings or get_settings()
    db = runtime.database(settings)
    with db.session() as s:
        job = s.get_one(Job, job_id)
        url = job.callback_url
        if not url or job.status not in JOB_FINAL:
            return True
        body = json.dumps({"event": "job.finished", "job": job_document(job, settings)}).encode()
    status, error = None, None
    try:
        check_url(url, settings)  # again: the name may resolve elsewhere by now
    except BadInput as exc:
        with db.session() as s:
            log_callback(s, job_id, url=url, attempt=attempt, error=f"refused: {exc}")
        return True  # settled: retrying cannot make the address acceptable
    try:
        r = httpx.post(url, content=body, timeout=10, headers={
            "Content-Type": "application/json", HEADER: sign(settings.secret("callback"), body)})
        status = r.status_code
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"
    with db.session() as s:
        log_callback(s, job_id, url=url, attempt=attempt, status_code=status, error=error)
    return status is not None and 200 <= status < 300
