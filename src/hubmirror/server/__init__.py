"""``hubmirror serve``: the sync on its schedule and on triggers (webhooks, API), one run at a time, with a
status page, ``/api/status``, ``/metrics``, ``/healthz`` and ``/readyz``."""

from __future__ import annotations

from .app import API_TOKEN_ENV, WEBHOOK_SECRET_ENV, Limits, Secrets, create_app, serve
from .runner import ELECTED_REASON, PENDING_REASONS, SHUTDOWN_REASON, LiveRun, SyncLoop

__all__ = [
    "API_TOKEN_ENV",
    "ELECTED_REASON",
    "PENDING_REASONS",
    "SHUTDOWN_REASON",
    "WEBHOOK_SECRET_ENV",
    "Limits",
    "LiveRun",
    "Secrets",
    "SyncLoop",
    "create_app",
    "serve",
]
