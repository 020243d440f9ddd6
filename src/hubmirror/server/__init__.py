"""``hubmirror serve``: the sync on its schedule and on triggers (webhooks, API), one run at a time, with a
status page, ``/api/status``, ``/metrics``, ``/healthz`` and ``/readyz``."""

from __future__ import annotations

from .app import API_TOKEN_ENV, WEBHOOK_SECRET_ENV, Secrets, create_app, serve
from .runner import SHUTDOWN_REASON, LiveRun, SyncLoop

__all__ = [
    "API_TOKEN_ENV",
    "SHUTDOWN_REASON",
    "WEBHOOK_SECRET_ENV",
    "LiveRun",
    "Secrets",
    "SyncLoop",
    "create_app",
    "serve",
]
