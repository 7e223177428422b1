"""The completion callback: a signed POST of the finished job's document to its callback URL."""

from __future__ import annotations

import json

from .. import runtime
from ..callbacks import HEADER, sign
from ..config import Settings, get_settings
from ..db import log_callback
from ..errors import BadInput, TransientError
from ..models import JOB_FINAL, Job
from .documents import job_document


def deliver_callback(job_id: str, attempt: int, settings: Settings | None = None) -> bool:
    """POST the signed completion document (callbacks.sign, header X-Product-Studio-Signature) to
    the job's callback URL and log the attempt. True when settled (delivered with a 2xx, nothing
    to send, or an address that is refused), False when it should be retried."""
    from ..fetch import post

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
        # Checked again (the name may resolve elsewhere by now) and sent to exactly the checked
        # addresses: no second lookup between the check and the POST (DNS rebinding).
        status = post(url, body, {"Content-Type": "application/json",
                                  HEADER: sign(settings.secret("callback"), body)}, settings, timeout=10)
    except BadInput as exc:
        with db.session() as s:
            log_callback(s, job_id, url=url, attempt=attempt, error=f"refused: {exc}")
        return True  # settled: retrying cannot make the address acceptable
    except TransientError as exc:
        error = str(exc)
    with db.session() as s:
        log_callback(s, job_id, url=url, attempt=attempt, status_code=status, error=error)
    return status is not None and 200 <= status < 300
