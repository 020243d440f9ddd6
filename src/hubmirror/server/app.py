"""``hubmirror serve``: the aiohttp application (status page, API, webhooks, metrics, probes) around a
`SyncLoop`, and `serve`, which runs it until SIGTERM or SIGINT.

Hardening (`Limits`): a webhook body is read only after a well-formed ``X-Hub-Signature-256`` header, at most
``max_webhook_reads`` at a time, within ``body_timeout`` and `MAX_BODY`, with the HMAC computed as it
arrives; a delivery seen before (its ``X-GitHub-Delivery``, or the same signed body) starts nothing; open
connections and the time a request head may take are bounded by a `ConnectionGuard`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
import resource
import signal
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import jinja2
from aiohttp import web
from aiohttp.http import HttpProcessingError

from .._errors import HubmirrorError
from .._units import size_text
from ..config import SyncConfig
from ..service import SyncService
from ..state import State, StateLocation
from .guard import ConnectionGuard
from .replicas import Replicas
from .runner import SyncLoop
from .status import collect

log = logging.getLogger(__name__)

WEBHOOK_SECRET_ENV = "HUBMIRROR_WEBHOOK_SECRET"
API_TOKEN_ENV = "HUBMIRROR_API_TOKEN"
#: GitHub sends payloads of up to 25 MB.
MAX_BODY = 26 * 1024 * 1024
#: No other endpoint reads a body.
_MAX_OTHER_BODY = 64 * 1024
_SIGNATURE = re.compile(r"sha256=[0-9a-fA-F]{64}")
#: File descriptors kept for the sync (registry connections, git, the state, an OCI layout) when the
#: open-file limit caps the connections: a quarter of the limit, at least this many.
_FDS_FOR_THE_SYNC = 128
#: A request body the server does not read is read and dropped for at most this long after the answer (so
#: that the client sees the answer rather than a reset), then the connection is closed.
_LINGER = 2.0
#: Bytes of a request body buffered before the server reads it (aiohttp pauses the socket beyond twice this).
_READ_BUFFER = 64 * 1024


@dataclass(frozen=True)
class Limits:
    """What the server allows a client (``hubmirror serve`` flags of the same names)."""

    #: Seconds a connection has to send a complete request head (after connecting, or after the previous
    #: response: an idle keep-alive connection is closed then too).
    header_timeout: float = 20.0
    #: Seconds a webhook delivery has to send its whole body.
    body_timeout: float = 60.0
    #: Open connections at most (lowered under a low open-file limit, `effective_connections`).
    max_connections: int = 256
    #: Webhook bodies read at the same time at most; more get 503 with Retry-After.
    max_webhook_reads: int = 2
    #: Webhook deliveries remembered (``X-GitHub-Delivery`` and the signature) to ignore replays.
    remembered_deliveries: int = 4096

    def effective_connections(self) -> int:
        """``max_connections``, but at most what the open-file limit leaves after the sync's share (at
        least 16)."""
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return self.max_connections
        return min(self.max_connections, max(16, soft - max(_FDS_FOR_THE_SYNC, soft // 4)))


@dataclass
class _Hooks:
    """Webhook bookkeeping: bodies being read now, and deliveries already seen (oldest first)."""

    reads: int = 0
    seen: OrderedDict[str, None] = field(default_factory=OrderedDict)

    def known(self, keys: list[str]) -> bool:
        return any(k in self.seen for k in keys)

    def remember(self, keys: list[str], limit: int) -> None:
        for k in keys:
            self.seen[k] = None
            self.seen.move_to_end(k)
        while len(self.seen) > limit:
            self.seen.popitem(last=False)


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
_LIMITS: web.AppKey[Limits] = web.AppKey("limits", Limits)
_HOOKS: web.AppKey[_Hooks] = web.AppKey("hooks", _Hooks)
GUARD: web.AppKey[ConnectionGuard] = web.AppKey("guard", ConnectionGuard)


def _template() -> jinja2.Template:
    text = resources.files(__package__).joinpath("templates", "status.html").read_text(encoding="utf-8")
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["size"] = _size
    env.filters["ago"] = _ago
    env.filters["when"] = _when
    env.filters["clock"] = _clock
    env.filters["duration"] = _duration
    env.filters["short"] = lambda c: (c or "")[:12]
    return env.from_string(text)


def create_app(loop: SyncLoop, secrets: Secrets, limits: Limits | None = None) -> web.Application:
    """The web application around *loop* (the caller starts and stops the loop); `serve` listens through
    its ``app[GUARD]``."""
    limits = limits or Limits()
    guard = ConnectionGuard(max_connections=limits.effective_connections(), header_timeout=limits.header_timeout)
    app = web.Application(client_max_size=_MAX_OTHER_BODY, middlewares=[guard.middleware])
    app[_LOOP] = loop
    app[_SECRETS] = secrets
    app[_TEMPLATE] = _template()
    app[_LIMITS] = limits
    app[_HOOKS] = _Hooks()
    app[GUARD] = guard
    app.router.add_get("/", _page)
    app.router.add_get("/api/status", _api_status)
    app.router.add_post("/api/sync", _api_sync)
    app.router.add_post("/hooks/github", _github)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    return app


def _read_status(loop: SyncLoop) -> dict[str, Any]:
    with State.open(loop.cfg.state) as state:  # a SQLite file's folder is made if missing
        return collect(state, loop)


async def _status(loop: SyncLoop) -> dict[str, Any]:
    """The status, read from the state on a worker thread: SQLite never blocks the loop a sync runs in."""
    return await asyncio.to_thread(_read_status, loop)


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


def _refuse(status: int, message: str, **headers: str) -> web.Response:
    """`_error` on a connection that then closes (its body, if any, is not read)."""
    resp = _error(status, message, **headers)
    resp.force_close()
    return resp


async def _page(request: web.Request) -> web.Response:
    try:
        data = await _status(request.app[_LOOP])
    except HubmirrorError as e:
        return web.Response(status=503, text=f"hubmirror: the state cannot be read: {e}\n")
    html = request.app[_TEMPLATE].render(s=data, q=request.query.get("q", ""))
    return web.Response(text=html, content_type="text/html", charset="utf-8")


async def _api_status(request: web.Request) -> web.Response:
    try:
        return web.json_response(await _status(request.app[_LOOP]), dumps=lambda d: json.dumps(d, indent=1))
    except HubmirrorError as e:
        return _error(503, f"the state cannot be read: {e}")


#: When to try again after a trigger could not be taken (the state is unreachable, or too many wait).
_RETRY = {"Retry-After": "10"}


async def _started(
    loop: SyncLoop,
    reason: str,
    repositories: list[str] | None = None,
    *,
    deliveries: list[str] | None = None,
    remember: int = 4096,
) -> web.Response:
    """Ask *loop* for a run and answer (202). *deliveries*: a webhook delivery's keys, which replicas on one
    state remember together (a delivery one of them accepted starts nothing on another)."""
    try:
        outcome, pending = await loop.submit(reason, repositories, deliveries=deliveries or (), remember=remember)
    except (HubmirrorError, TimeoutError) as e:
        return _error(503, f"the trigger cannot be written to the state: {e or 'no answer in time'}", **_RETRY)
    if outcome == "refused":
        return _error(503, "hubmirror serve is shutting down; no new run starts")
    if outcome == "seen":
        return web.json_response({"event": "push", "ignored": "a delivery already received"})
    if outcome == "full":
        return _error(503, "too many triggers wait for the scheduler already; try again later", **_RETRY)
    body: dict[str, Any] = {"run": outcome, "pending": pending}
    if repositories is not None:
        body["repositories"] = repositories
    return web.json_response(body, status=202)


#: A repository named in ``POST /api/sync {"repositories": [...]}``: ``python``, ``library/python``, a path.
_REPOSITORY = re.compile(r"^[a-z0-9]+(?:[._/-][a-z0-9]+)*$")
#: The body of ``POST /api/sync`` is small: a list of repository names.
MAX_API_BODY = 64 * 1024


async def _repositories(request: web.Request) -> list[str] | web.Response | None:
    """The ``repositories`` of an API trigger's JSON body (None: no body, the whole selection), or the 400."""
    if not request.can_read_body:
        return None
    if request.content_length is not None and request.content_length > MAX_API_BODY:
        return _error(413, f"the body is at most {MAX_API_BODY} bytes")
    raw = await request.content.read(MAX_API_BODY + 1)
    if len(raw) > MAX_API_BODY:
        return _error(413, f"the body is at most {MAX_API_BODY} bytes")
    if not raw.strip():
        return None
    try:
        obj = json.loads(raw)
    except ValueError:
        return _error(400, 'the body must be JSON: {"repositories": ["python", ...]} (or empty for every one)')
    names = obj.get("repositories") if isinstance(obj, dict) else None
    if names is None and isinstance(obj, dict) and not obj:
        return None
    if (
        not isinstance(names, list)
        or not names
        or len(names) > 1000
        or not all(isinstance(n, str) and _REPOSITORY.match(n.strip().strip("/")) for n in names)
    ):
        return _error(400, '"repositories" must be a non-empty list of repository names, e.g. ["python", "redis"]')
    return sorted({n.strip().strip("/") for n in names})


async def _api_sync(request: web.Request) -> web.Response:
    token = request.app[_SECRETS].api_token
    if not token:
        return _error(403, f"POST /api/sync is disabled: start hubmirror serve with {API_TOKEN_ENV} set to enable it")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        return _error(401, "a valid 'Authorization: Bearer TOKEN' header is required", **{"WWW-Authenticate": "Bearer"})
    repositories = await _repositories(request)
    if isinstance(repositories, web.Response):
        return repositories
    reason = "api"
    if repositories is not None:
        reason += f": {', '.join(repositories[:5])}{' …' if len(repositories) > 5 else ''}"
    return await _started(request.app[_LOOP], reason, repositories)


async def _signed_body(request: web.Request, secret: str, given: str) -> bytes | web.Response:
    """The body, if its HMAC is *given*; else the answer. The HMAC is computed as the body arrives; at most
    `MAX_BODY` bytes within ``body_timeout``, and at most ``max_webhook_reads`` bodies at a time."""
    limits, hooks = request.app[_LIMITS], request.app[_HOOKS]
    if request.content_length is not None and request.content_length > MAX_BODY:
        return _refuse(413, f"a webhook body is at most {MAX_BODY} bytes")
    if hooks.reads >= limits.max_webhook_reads:
        return _refuse(503, "too many webhook deliveries are being read at once; try again", **{"Retry-After": "5"})
    hooks.reads += 1
    try:
        mac = hmac.new(secret.encode(), digestmod=hashlib.sha256)
        body = bytearray()
        async with asyncio.timeout(limits.body_timeout):
            async for chunk in request.content.iter_any():
                if len(body) + len(chunk) > MAX_BODY:
                    return _refuse(413, f"a webhook body is at most {MAX_BODY} bytes")
                mac.update(chunk)
                body += chunk
    except TimeoutError:
        return _refuse(408, f"the webhook body did not arrive within {limits.body_timeout:g} s")
    except (ConnectionError, HttpProcessingError):  # the client went away, or sent less than it announced
        return _refuse(400, "the webhook body was cut short")
    finally:
        hooks.reads -= 1
    if not hmac.compare_digest(given[len("sha256=") :].lower().encode(), mac.hexdigest().encode()):
        return _refuse(401, "wrong X-Hub-Signature-256")
    return bytes(body)


async def _github(request: web.Request) -> web.Response:
    """A GitHub webhook: the HMAC of the raw body is checked (in constant time) before anything else; a
    request without a well-formed signature header is refused before its body is read."""
    secret = request.app[_SECRETS].webhook_secret
    if not secret:
        return _refuse(403, f"webhooks are disabled: start hubmirror serve with {WEBHOOK_SECRET_ENV} set")
    given = request.headers.get("X-Hub-Signature-256", "").strip()
    if not _SIGNATURE.fullmatch(given):
        return _refuse(401, "missing or malformed X-Hub-Signature-256 (expected sha256= and 64 hex digits)")
    body = await _signed_body(request, secret, given)
    if isinstance(body, web.Response):
        return body
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
    repository = payload.get("repository")
    repo = str(repository.get("full_name") or "")[:100] if isinstance(repository, dict) else ""
    after = str(payload.get("after") or "")
    if after and set(after) == {"0"}:
        return web.json_response({"event": "push", "ignored": "a deleted branch"})
    # A delivery seen before starts nothing: the same X-GitHub-Delivery (GitHub's retry, a replay), or the
    # same signed body under another delivery id (the id is not signed).
    delivery = request.headers.get("X-GitHub-Delivery", "").strip()[:128]
    keys = [f"body:{given[len('sha256=') :].lower()}", *([f"delivery:{delivery}"] if delivery else [])]
    hooks = request.app[_HOOKS]
    if hooks.known(keys):
        return web.json_response({"event": "push", "ignored": "a delivery already received"})
    reason = " ".join(p for p in ("push", repo, str(payload.get("ref") or "")[:100], after[:12]) if p)
    remember = request.app[_LIMITS].remembered_deliveries
    response = await _started(request.app[_LOOP], reason, deliveries=keys, remember=remember)
    if response.status in (200, 202):  # 200: another replica received it (the state remembers)
        hooks.remember(keys, remember)
    return response


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
    limits: Limits | None = None,
) -> int:
    """Serve until SIGTERM or SIGINT; a run in progress then finishes its items in flight. Returns 0."""
    service = service or SyncService()
    limits = limits or Limits()
    replicas = Replicas(cfg) if StateLocation.parse(cfg.state).kind == "postgresql" else None
    loop = SyncLoop(cfg, service, replicas=replicas)
    app = create_app(loop, secrets, limits)
    guard = app[GUARD]
    if guard.max_connections < limits.max_connections:
        log.warning(
            "serving at most %d connections: the open-file limit is %d (raise it, e.g. LimitNOFILE=, for more)",
            guard.max_connections,
            resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        )
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        keepalive_timeout=limits.header_timeout,
        lingering_time=_LINGER,
        read_bufsize=_READ_BUFFER,
    )
    await runner.setup()
    site = guard.site(runner, host, port)
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
        at = datetime.now(UTC).isoformat(timespec="seconds")
        log.info("stopping at %s", at, extra={"fields": {"event": "stopping", "at": at}})
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


def _clock(when: object) -> str:
    t = _parse(when)
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if t is not None else "–"


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


__all__ = ["API_TOKEN_ENV", "GUARD", "MAX_BODY", "WEBHOOK_SECRET_ENV", "Limits", "Secrets", "create_app", "serve"]
