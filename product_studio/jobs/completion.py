"""The completion callback: a signed POST of the finished job's document to its callback URL.

It goes through an outbox (Job.callback_due_at): the transaction that finishes a job records the
callback as owed (db.maybe_finish_job); every attempt holds it until the next attempt is due; a
settled callback (2xx, refused address, given up) is no longer owed. What stays owed past its due
time plus the sweeper's grace is sent again by the sweeper (recovery.due_callbacks).
"""

from __future__ import annotations

import json
from datetime import timedelta

from .. import runtime
from ..callbacks import HEADER, sign
from ..config import Settings, get_settings
from ..db import hold_callback, log_callback, settle_callback
from ..errors import BadInput, TransientError
from ..models import JOB_FINAL, Job, utcnow
from .documents import job_document

POST_TIMEOUT = 10.0  # s, one attempt's POST


def deliver_callback(job_id: str, attempt: int, settings: Settings | None = None, *,
                     retry_in: float | None = None) -> bool:
    """POST the signed completion document (callbacks.sign, header X-Product-Studio-Signature) to
    the job's callback URL and log the attempt.

    `retry_in`: seconds after which the caller tries again if this attempt fails; None when this is
    the last attempt (a failure then gives the callback up). The outbox is held meanwhile, so the
    sweeper does not send it beside a live retry chain.

    True when settled (delivered with a 2xx, nothing to send, an address that is refused, given
    up, or already settled by another delivery of the same callback: not sent twice), False when it
    should be retried. Never raises for the receiver's failures (they are logged); database errors
    propagate.
    """
    from ..fetch import post

    settings = settings or get_settings()
    db = runtime.database(settings)
    with db.session() as s:
        job = s.get(Job, job_id)
        if job is None:
            return True
        url, finished_at = job.callback_url, job.finished_at
        if not url or job.status not in JOB_FINAL:
            settle_callback(s, job_id, finished_at)  # reopened: its next end owes the callback
            return True
        if job.callback_due_at is None and any(a.at >= finished_at for a in job.callbacks if finished_at):
            return True  # settled already (a duplicated or redelivered message): never sent twice
        hold_callback(s, job_id, utcnow() + timedelta(seconds=POST_TIMEOUT + (retry_in or 0.0)))
        body = json.dumps({"event": "job.finished", "job": job_document(job, settings)}).encode()
    status, error = None, None
    try:
        # Checked again (the name may resolve elsewhere by now) and sent to exactly the checked
        # addresses: no second lookup between the check and the POST (DNS rebinding).
        signature = sign(runtime.secret("callback", settings), body)
        status = post(url, body, {"Content-Type": "application/json", HEADER: signature}, settings,
                      timeout=POST_TIMEOUT)
    except BadInput as exc:
        with db.session() as s:
            log_callback(s, job_id, url=url, attempt=attempt, error=f"refused: {exc}")
            settle_callback(s, job_id, finished_at)
        return True  # settled: retrying cannot make the address acceptable
    except TransientError as exc:
        error = str(exc)
    ok = status is not None and 200 <= status < 300
    with db.session() as s:
        log_callback(s, job_id, url=url, attempt=attempt, status_code=status, error=error)
        if ok or retry_in is None:
            settle_callback(s, job_id, finished_at)
    return ok or retry_in is None
