"""``hubmirror serve``: the aiohttp application (status page, API, webhooks, metrics, probes) around a
`SyncLoop`, and `serve`, which runs it until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import jinja2
from aiohttp import web

from .._errors import HubmirrorError
from .._units import size_text
from ..config import SyncConfig
from ..service import SyncService
from ..state import State
from .runner import SyncLoop
from .status import collect

log = logging.getLogger(__name__)

WEBHOOK_SECRET_ENV = "HUBMIRROR_WEBHOOK_SECRET"
API_TOKEN_ENV = "HUBMIRROR_API_TOKEN"
#: GitHub sends payloads of up to 25 MB.
MAX_BODY = 26 * 1024 * 1024


@dataclass
class Secrets:
    """The webhook secret and the API token (from the environment); None disables the endpoint."""

    webhook_secret: str | None = None
    api_token: str | None = None

    def __repr__(self) -> str:  # never show them
        webhook, api = ("set" if v else "unset" for v in (self.webhook_secret, self.api_token))
        return f"Secrets(webhook={webhook}, api={api})"


_LOOP: web.AppKey[SyncLoop] = web.AppKey("loop", SyncLoop)
_SECRETS: web.AppKey[Secrets] = web.AppKey("secrets", Secrets)
_TEMPLATE: web.AppKey[jinja2.Template] = web.AppKey("template", jinja2.Template)


def _template() -> jinja2.Template:
    text = resources.files(__package__).joinpath("templates", "status.html").read_text(encoding="utf-8")
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["size"] = _size
    env.filters["ago"] = _ago
    env.filters["when"] = _when
    env.filters["duration"] = _duration
    env.filters["short"] = lambda c: (c or "")[:12]
    return env.from_string(text)


def create_app(loop: SyncLoop, secrets: Secrets) -> web.Application:
    """The web application around *loop* (the caller starts and stops the loop)."""
    app = web.Application(client_max_size=MAX_BODY)
    app[_LOOP] = loop
    app[_SECRETS] = secrets
    app[_TEMPLATE] = _template()
    app.router.add_get("/", _page)
    app.router.add_get("/api/status", _api_status)
    app.router.add_post("/api/sync", _api_sync)
    app.router.add_post("/hooks/github", _github)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    return app


def _read_status(loop: SyncLoop) -> dict[str, Any]:
    loop.cfg.state.parent.mkdir(parents=True, exist_ok=True)
    with State.open(loop.cfg.state) as state:
        return collect(state, loop)


async def _status(loop: SyncLoop) -> dict[str, Any]:
    """The status, read from the state on a worker thread: SQLite never blocks the loop a sync runs in."""
    return await asyncio.to_thread(_read_status, loop)


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


async def _page(request: web.Request) -> web.Response:
    try:
        data = await _status(request.app[_LOOP])
    except HubmirrorError as e:
        return web.Response(status=503, text=f"hubmirror: the state cannot be read: {e}\n")
    html = request.app[_TEMPLATE].render(s=data)
    return web.Response(text=html, content_type="text/html", charset="utf-8")


async def _api_status(request: web.Request) -> web.Response:
    try:
        return web.json_response(await _status(request.app[_LOOP]), dumps=lambda d: json.dumps(d, indent=1))
    except HubmirrorError as e:
        return _error(503, f"the state cannot be read: {e}")


def _started(loop: SyncLoop, reason: str) -> web.Response:
    outcome = loop.trigger(reason)
    if outcome == "refused":
        return _error(503, "hubmirror serve is shutting down; no new run starts")
    return web.json_response({"run": outcome, "pending": loop.pending}, status=202)


async def _api_sync(request: web.Request) -> web.Response:
    token = request.app[_SECRETS].api_token
    if not token:
        return _error(403, f"POST /api/sync is disabled: start hubmirror serve with {API_TOKEN_ENV} set to enable it")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        return _error(401, "a valid 'Authorization: Bearer TOKEN' header is required", **{"WWW-Authenticate": "Bearer"})
    return _started(request.app[_LOOP], "api")


async def _github(request: web.Request) -> web.Response:
    """A GitHub webhook: the HMAC of the raw body is checked (in constant time) before anything else."""
    secret = request.app[_SECRETS].webhook_secret
    if not secret:
        return _error(403, f"webhooks are disabled: start hubmirror serve with {WEBHOOK_SECRET_ENV} set")
    body = await request.read()
    given = request.headers.get("X-Hub-Signature-256", "")
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(given.encode(), expected.encode()):
        return _error(401, "missing or wrong X-Hub-Signature-256")
    event = request.headers.get("X-GitHub-Event", "")
    if event == "ping":
        return web.json_response({"event": "ping", "ok": True})
    if event != "push":
        return web.json_response({"event": event, "ignored": "only push events start a sync"})
    try:
        payload = json.loads(body)
    except ValueError:
        payload = {}
    if not isinstance(payload, dict):
        payload = {}
    repo = (payload.get("repository") or {}).get("full_name") if isinstance(payload.get("repository"), dict) else None
    after = str(payload.get("after") or "")
    if after and set(after) == {"0"}:
        return web.json_response({"event": "push", "ignored": "a deleted branch"})
    reason = " ".join(p for p in ("push", repo, str(payload.get("ref") or ""), after[:12]) if p)
    return _started(request.app[_LOOP], reason)


async def _metrics(request: web.Request) -> web.Response:
    body = request.app[_LOOP].service.metrics.text()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def _readyz(request: web.Request) -> web.Response:
    loop = request.app[_LOOP]
    if loop.stopping:
        return web.Response(status=503, text="shutting down\n")
    if not loop.alive:
        return web.Response(status=503, text="the sync loop is not running\n")
    try:
        await _status(loop)
    except HubmirrorError as e:
        return web.Response(status=503, text=f"the state cannot be read: {e}\n")
    return web.Response(text="ready\n")


async def serve(
    cfg: SyncConfig,
    *,
    host: str,
    port: int,
    secrets: Secrets,
    service: SyncService | None = None,
    on_listen: Callable[[str], None] | None = None,
) -> int:
    """Serve until SIGTERM or SIGINT; a run in progress then finishes its items in flight. Returns 0."""
    service = service or SyncService()
    loop = SyncLoop(cfg, service)
    runner = web.AppRunner(create_app(loop, secrets), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    stop = asyncio.Event()
    ev = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        ev.add_signal_handler(sig, stop.set)
    try:
        if on_listen is not None:
            on_listen(f"http://{host if ':' not in host else f'[{host}]'}:{port}/")
        loop.start()
        await stop.wait()
        log.info("stopping at %s", datetime.now(UTC).isoformat(timespec="seconds"))
        await loop.shutdown()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            ev.remove_signal_handler(sig)
        await runner.cleanup()
    return 0


# -- template filters -------------------------------------------------------------------------------


def _size(n: object) -> str:
    return size_text(n)  # decimal units, as ``sync`` and ``status`` write them


def _parse(when: object) -> datetime | None:
    if not isinstance(when, str) or not when:
        return None
    try:
        return datetime.fromisoformat(when)
    except ValueError:
        return None


def _when(when: object) -> str:
    t = _parse(when)
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if t is not None else "–"


def _ago(when: object) -> str:
    t = _parse(when)
    if t is None:
        return "–"
    secs = (datetime.now(UTC) - t).total_seconds()
    future = secs < 0
    secs = abs(secs)
    if secs < 90:
        text = f"{secs:.0f} s"
    elif secs < 5400:
        text = f"{secs / 60:.0f} min"
    elif secs < 172800:
        text = f"{secs / 3600:.1f} h"
    else:
        text = f"{secs / 86400:.0f} days"
    return f"in {text}" if future else f"{text} ago"


def _duration(secs: object) -> str:
    if not isinstance(secs, int | float):
        return "–"
    if secs < 60:
        return f"{secs:.1f} s"
    return f"{int(secs // 60)} min {int(secs % 60)} s"


__all__ = ["API_TOKEN_ENV", "WEBHOOK_SECRET_ENV", "Secrets", "create_app", "serve"]
