"""Webhook receivers for store platforms (issue 6). Each checks its own signature; no session auth."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/webhooks", tags=["webhooks"])
