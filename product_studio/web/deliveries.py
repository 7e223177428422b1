"""Webhook deliveries made visible: the Deliveries page and GET /api/v1/deliveries list each
delivery (received time, store, platform, topic, status and reason), the jobs it made and the
completion callback attempts of those jobs, newest first, filtered by status; a failed delivery
or a failed callback is retried from the page (a POST form, then back to the list) or with
POST /api/v1/deliveries/{id}/retry. The data and the rules come from webhooks/deliveries.py; the
retry is set going by the task layer (tasks.intake.retry), as every door does it.
"""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from .. import runtime
from ..webhooks.deliveries import STATUSES, delivery_document, list_deliveries
from .pages import page
from .schemas import DeliveryOut, DeliveryRetried, DeliveryStatusName, Error
from .security import check_csrf, current_user, require_api_key

PAGE_SIZE = 50
User = Annotated[str, Depends(current_user)]
Limit = Annotated[int, Query(ge=1, le=200, description="how many, at most")]
Offset = Annotated[int, Query(ge=0, le=10**9, description="how many of the newest to skip")]

router = APIRouter(include_in_schema=False)
api_router = APIRouter(prefix="/api/v1", tags=["deliveries"], dependencies=[Depends(require_api_key)],
                       responses={401: {"model": Error}, 404: {"model": Error}, 409: {"model": Error},
                                  422: {"model": Error}})

# Delivery and callback states -> the badge classes the stylesheet colours.
_BADGES = {"processed": "status-done", "delivered": "status-done", "failed": "status-failed",
           "rejected": "status-failed", "accepted": "status-running", "sending": "status-running",
           "waiting": "status-running"}
_ID = re.compile(r"[0-9a-f]{32}")


def _listed(status: str | None, limit: int, offset: int) -> list[dict]:
    with runtime.database().session() as s:
        return list_deliveries(s, status=status, limit=limit, offset=offset)


def _retry(delivery_id: str):
    from tasks.intake import retry  # Celery is imported on first use, not at web start

    return retry(delivery_id)


# --- the page -------------------------------------------------------------------------------

@router.get("/deliveries")
def deliveries_page(request: Request, user: User, status: str = "", offset: int = 0,
                    retried: str = "") -> HTMLResponse:
    status = status if status in STATUSES else ""
    offset = min(max(0, offset), 10**9)
    rows = _listed(status or None, PAGE_SIZE, offset)
    query = {"status": status} if status else {}
    return page(request, "deliveries.html", rows=rows, status=status, statuses=STATUSES, offset=offset,
                page_size=PAGE_SIZE, badges=_BADGES, retried=retried if _ID.fullmatch(retried) else "",
                newer=urlencode(query | {"offset": max(offset - PAGE_SIZE, 0)}),
                older=urlencode(query | {"offset": offset + PAGE_SIZE}))


@router.post("/deliveries/{delivery_id}/retry")
async def retry_from_page(request: Request, user: User, delivery_id: str, csrf_token: Annotated[str, Form()] = "",
                          status: Annotated[str, Form()] = "") -> Response:
    check_csrf(request, csrf_token)
    await run_in_threadpool(_retry, delivery_id)  # 404 / 409 pages name why
    query = {"status": status} if status in STATUSES else {}
    return RedirectResponse(f"/deliveries?{urlencode(query | {'retried': delivery_id})}#d-{delivery_id}",
                            status_code=303)


# --- the API --------------------------------------------------------------------------------

@api_router.get("/deliveries", response_model=list[DeliveryOut],
                summary="Webhook deliveries, newest first, with the jobs they made and their callback attempts")
def get_deliveries(status: Annotated[DeliveryStatusName | None, Query(description="only these")] = None,
                   limit: Limit = 50, offset: Offset = 0) -> list[dict]:
    return _listed(status, limit, offset)


@api_router.post("/deliveries/{delivery_id}/retry", status_code=202, response_model=DeliveryRetried,
                 summary="Retry a failed delivery (its intake runs again) or its jobs' failed callbacks; "
                         "409 names why when it cannot be retried")
def retry_delivery(delivery_id: str) -> dict:
    retried = _retry(delivery_id)
    with runtime.database().session() as s:
        document = delivery_document(s, delivery_id)
    return {"retrying": "intake" if retried.intake else "callbacks", "jobs": retried.jobs, "delivery": document}
