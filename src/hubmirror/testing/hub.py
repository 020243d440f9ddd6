"""A Docker Hub emulator: a proxy in front of a real registry that behaves like Docker Hub.

Every ``/v2/`` request is forwarded to the upstream ``docker-registry`` and its answer passed back
(``Location``/``Link`` rewritten to the emulator's address). On top of that the emulator adds what
Hub does and Distribution does not (reference §C, §D.2, §D.5, §F.4): bearer-token auth with a ``/token``
endpoint, the pull quota and its ``ratelimit-*`` headers, the bare-429 abuse limit, blob GETs
redirected to a second "CDN" port, deterministic fault injection, and the repository tags API
(``/v2/namespaces/NS/repositories/REPO/tags``: each tag's digest, push time and platforms, paginated).
Modes a test switches on answer as the real Hub does where it is less kind: paid accounts without quota
headers (`disable_ratelimit`), the 2026 abuse 429 (``TOOMANYREQUESTS`` "retry-after: …, allowed: N/minute";
`abuse`/`set_abuse_limit` with ``hub_message``), 401 ``insufficient_scope`` for unknown repositories
(`hide_unknown_repositories`), a throttled token server (`throttle_tokens`), CDN URLs that expire and CDN
5xx (`expire_cdn_urls`, `set_cdn_lifetime`, `cdn_fail`). docs/emulator.md lists them with their sources.
It runs its own event loop in a background thread, so async tests, blocking subprocesses (``skopeo``,
the CLI) and the demo can all use it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import secrets
import socket
import ssl
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import aiohttp
from aiohttp import web

from ..media import ACCEPT
from ._threaded import ThreadedServer
from .registry import Registry

SERVICE = "registry.docker.io"
PULL_LIMIT_MESSAGE = (
    "You have reached your pull rate limit. You may increase the limit by authenticating and upgrading: "
    "https://www.docker.com/increase-rate-limits"
)
FAULT_KINDS = frozenset({"reset", "500", "truncate", "flip"})
#: Docker Hub's abuse limit since 2026 (terraform-provider-terrifi #50, hub-feedback #2511), as its message.
ABUSE_MESSAGE = "retry-after: 985.86µs, allowed: 44000/minute"
#: The repositories the token request being answered names and the upstream lacks (`hide_unknown_repositories`).
_UNKNOWN_REPOS: ContextVar[frozenset[str]] = ContextVar("hub_unknown_repositories", default=frozenset())
_REASONS = {429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}

_REPO_ROUTE = re.compile(r"^/v2/(?P<name>.+?)/(?P<kind>manifests|blobs|tags|referrers)/(?P<rest>.*)$")
_REFERRERS_TAG = re.compile(r"^sha256-[0-9a-f]{64}$")
_TAGS_API_ROUTE = re.compile(
    r"^/v2/(?:namespaces/(?P<ns>[^/]+)/repositories/(?P<repo>[^/]+)|repositories/(?P<ns2>[^/]+)/(?P<repo2>[^/]+))"
    r"/tags/?$"
)
#: One tag of the tags API: ``/v2/namespaces/NS/repositories/REPO/tags/TAG``.
_TAG_API_ROUTE = re.compile(r"^/v2/namespaces/(?P<ns>[^/]+)/repositories/(?P<repo>[^/]+)/tags/(?P<tag>[^/]+)$")
_PUSH_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_FORWARD_REQUEST_HEADERS = ("Accept", "Content-Type", "Content-Length", "Content-Range", "If-None-Match", "Range")
_PASS_RESPONSE_HEADERS = (
    "Content-Type",
    "Docker-Content-Digest",
    "Docker-Distribution-API-Version",
    "Docker-Upload-UUID",
    "Etag",
    "Location",
    "Link",
    "Range",
    "Content-Range",
    "Accept-Ranges",
    "OCI-Subject",
)
_CHUNK = 256 * 1024

#: A persistent-fault matcher: called with (method, path); a string is a regex searched in the path.
FaultMatcher = Callable[[str, str], bool] | str


@dataclass(frozen=True)
class RequestRecord:
    """One request the emulator answered (the Hub port; CDN requests are in `CdnRecord`)."""

    method: str
    kind: str  # manifest | blob | tag-list | referrers | tags-api | token | other
    repo: str  # "" when the request names no repository
    ref: str  # tag or digest for manifests and blobs, else ""
    status: int
    user: str | None  # the account the token was issued to; None for anonymous
    at: float = 0.0  # time.monotonic() when it arrived


@dataclass(frozen=True)
class CdnRecord:
    """One blob request on the CDN port, and whether it (wrongly) carried credentials."""

    repo: str
    digest: str
    status: int
    had_authorization: bool


@dataclass
class _Token:
    user: str | None
    access: dict[str, set[str]]
    expires_at: float

    def __repr__(self) -> str:  # never show the token itself
        return f"_Token(user={self.user!r}, access={self.access!r})"


@dataclass
class _Quota:
    limit: int
    remaining: int
    window: int
    started: float = field(default_factory=time.monotonic)

    def roll(self, now: float) -> None:
        if now - self.started >= self.window:
            self.remaining = self.limit
            self.started = now


@dataclass
class _Throttle:
    """Answers *status* to the next *count* requests, and at most *per_second* a second (None: no rate)."""

    count: int = 0
    per_second: float | None = None
    status: int = 429
    retry_after: float | None = 1.0
    recent: list[float] = field(default_factory=list)

    def take(self, now: float) -> tuple[int, float | None] | None:
        """(status, Retry-After) when the request arriving *now* is throttled, else None."""
        if self.count > 0:
            self.count -= 1
            return self.status, self.retry_after
        if self.per_second is None:
            return None
        self.recent = [t for t in self.recent if now - t < 1.0]
        if len(self.recent) >= self.per_second:
            return self.status, self.retry_after
        self.recent.append(now)
        return None


@dataclass
class _Faults:
    rate: float
    seed: int
    kinds: tuple[str, ...]
    paths: frozenset[str]
    attempts: Counter[str] = field(default_factory=Counter)


class HubEmulator(ThreadedServer):
    """Docker Hub in front of *upstream* (a running `Registry`), on ``127.0.0.1`` with free ports.

    Use as a context manager, or call `start` and `stop`. Controls (`set_limit`, `set_faults`, …) and
    accessors (`counts`, `manifest_gets`, …) may be called from any thread.
    """

    def __init__(
        self,
        upstream: Registry,
        *,
        users: Mapping[str, str] | None = None,
        expires_in: int = 300,
        allow_push: bool = False,
        limit: int | None = 100,
        window: int = 21600,
        source: str = "127.0.0.1",
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__()
        self.upstream = upstream
        self.ssl_context = ssl_context  # serve HTTPS (both ports) with it
        self.expires_in = expires_in
        self.allow_push = allow_push
        self.source = source
        self._users = dict(users or {})
        self._lock = threading.Lock()
        self._tokens: dict[str, _Token] = {}
        self._quota: _Quota | None = _Quota(limit, limit, window) if limit is not None else None
        self._abuse_left = 0
        self._abuse_retry_after = 0.0
        self._abuse_like_quota = False
        self._abuse_limit: int | None = None  # requests per second before the abuse 429s start
        self._abuse_match: Callable[[str, str], bool] | None = None  # which requests `abuse` answers
        self._abuse_message = False  # 2026 Hub: TOOMANYREQUESTS "retry-after: …, allowed: N/minute"
        self._recent: list[float] = []  # arrival times within the last second (for the abuse limit)
        self._hide_unknown = False  # a token grants nothing for a repository the upstream lacks: 401
        self._token_throttle = _Throttle()  # the token server's own 429/5xx answers
        self._cdn_lifetime = 600.0  # seconds a signed CDN URL is valid
        self._cdn_expired_left = 0  # redirects still to hand out already expired
        self._cdn_denied_status = 403
        self._cdn_fail_left = 0  # CDN requests still to answer with _cdn_fail_status
        self._cdn_fail_status = 503
        self._faults: _Faults | None = None
        self._fail_always: Callable[[str, str], bool] | None = None
        self._fail_status = 500
        self._head_digest = True
        self._blob_delay = 0.0
        self._records: list[RequestRecord] = []
        self._cdn_records: list[CdnRecord] = []
        self._sign_key = secrets.token_bytes(16)
        self._runner: web.AppRunner | None = None
        self._cdn_runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._port = 0
        self._cdn_port = 0
        self._pushed: dict[tuple[str, str], datetime] = {}
        self._referrers_api = False
        self._tag_details: dict[tuple[str, str], list[dict[str, Any]]] = {}

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl_context else 'http'}://{self.host}"

    @property
    def token_url(self) -> str:
        return f"{self.url}/token"

    @property
    def cdn_host(self) -> str:
        return f"127.0.0.1:{self._cdn_port}"

    @property
    def cdn_url(self) -> str:
        return f"{'https' if self.ssl_context else 'http'}://{self.cdn_host}"

    _name = "hub emulator"

    def _thread_name(self) -> str:
        return f"hub-emulator->{self.upstream.host}"

    def __repr__(self) -> str:
        return f"HubEmulator(url={self.url!r}, upstream={self.upstream.url!r})"

    async def _setup(self) -> None:
        self._session = aiohttp.ClientSession(
            headers=self.upstream.auth_headers(),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            auto_decompress=False,
        )
        hub_app = web.Application(client_max_size=1024**4)
        hub_app.router.add_route("*", "/{tail:.*}", self._handle)
        cdn_app = web.Application()
        cdn_app.router.add_route("GET", "/blobs/{digest}", self._handle_cdn)
        self._runner = web.AppRunner(hub_app, access_log=None, handle_signals=False)
        cdn_runner = web.AppRunner(cdn_app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await cdn_runner.setup()
        hub_sock, self._port = _listen()
        cdn_sock, self._cdn_port = _listen()
        await web.SockSite(self._runner, hub_sock, ssl_context=self.ssl_context).start()
        await web.SockSite(cdn_runner, cdn_sock, ssl_context=self.ssl_context).start()
        self._cdn_runner = cdn_runner

    async def _teardown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._cdn_runner is not None:
            await self._cdn_runner.cleanup()
        if self._session is not None:
            await self._session.close()

    # -- controls --------------------------------------------------------------------------------

    def set_limit(self, limit: int, remaining: int | None = None, window: int = 21600) -> None:
        """Enforce a pull quota of *limit* manifest GETs per *window* seconds, *remaining* left now."""
        with self._lock:
            self._quota = _Quota(limit, limit if remaining is None else remaining, window)

    def refill(self) -> None:
        """Start a new quota window now (as if the window had elapsed)."""
        with self._lock:
            if self._quota is not None:
                self._quota.remaining = self._quota.limit
                self._quota.started = time.monotonic()

    def disable_ratelimit(self) -> None:
        """No quota and no ``ratelimit-*`` headers, as for a paid account."""
        with self._lock:
            self._quota = None

    @property
    def remaining(self) -> int | None:
        """Pulls left in the current window (None when not limited)."""
        with self._lock:
            if self._quota is None:
                return None
            self._quota.roll(time.monotonic())
            return self._quota.remaining

    def abuse(
        self,
        count: int,
        retry_after: float = 0.0,
        *,
        like_quota: bool = False,
        hub_message: bool = False,
        match: FaultMatcher | None = None,
    ) -> None:
        """Answer the next *count* requests (any path) with the abuse limit's ``429``: bare with
        ``Retry-After``; or with *like_quota* dressed like a quota 429 (``TOOMANYREQUESTS`` body) but with
        the quota headers saying pulls are left, as a client must still tell apart from the pull quota; or
        with *hub_message* as Docker Hub answers since 2026 (`ABUSE_MESSAGE`: code ``TOOMANYREQUESTS``,
        message ``retry-after: 985.86µs, allowed: 44000/minute``, no ``Retry-After`` header, and quota
        headers only if the account has a quota: none after `disable_ratelimit`, a paid account).
        *match* (as for `fail_always`) limits it to the matching requests: the abuse limit strikes whatever
        request comes, and a test may want it to strike a manifest GET."""
        with self._lock:
            self._abuse_match = _matcher(match)
            self._abuse_left = count
            self._abuse_retry_after = retry_after
            self._abuse_like_quota = like_quota
            self._abuse_message = hub_message

    def set_abuse_limit(self, per_second: int | None, retry_after: float = 1.0, *, hub_message: bool = False) -> None:
        """Docker Hub's abuse limit: a request arriving when *per_second* requests already came within the
        last second is answered with a bare ``429`` and ``Retry-After`` (None: no limit); with *hub_message*
        as Hub answers since 2026 (see `abuse`): ``TOOMANYREQUESTS`` with ``retry-after: <until a slot
        frees>, allowed: <per_second × 60>/minute`` in the message and no ``Retry-After`` header. The token
        endpoint has its own limit (`throttle_tokens`)."""
        with self._lock:
            self._abuse_limit = per_second
            self._abuse_retry_after = retry_after
            self._abuse_like_quota = False
            self._abuse_message = hub_message
            self._recent.clear()

    def hide_unknown_repositories(self, enabled: bool = True) -> None:
        """With True, answer a pull of a repository the upstream does not have as Docker Hub does: the token
        server grants a token with no access to it (the requested scope is dropped, no error), and the
        registry answers ``401`` with ``WWW-Authenticate: Bearer …,error="insufficient_scope"``, never 404
        (distribution #4354). A push scope the emulator allows is still granted (the user's namespace)."""
        with self._lock:
            self._hide_unknown = enabled

    def throttle_tokens(
        self, count: int = 0, *, per_second: float | None = None, status: int = 429, retry_after: float | None = 1.0
    ) -> None:
        """The token server behind the abuse limit (skopeo #325): answer the next *count* token requests,
        and with *per_second* every one arriving when that many already came within the last second, with
        *status* (429, or a 5xx) and ``Retry-After: retry_after`` (None: no header). ``throttle_tokens()``
        switches it off."""
        with self._lock:
            self._token_throttle = _Throttle(count, per_second, status, retry_after)

    def set_cdn_lifetime(self, seconds: float) -> None:
        """Sign CDN URLs for *seconds* (default 600): a URL used later answers 403, as an expired signed URL."""
        with self._lock:
            self._cdn_lifetime = seconds

    def expire_cdn_urls(self, count: int, status: int = 403) -> None:
        """Hand out the next *count* blob redirects with CDN URLs already expired (as a URL that waited too long
        for a connection, or a skewed clock). From now on the CDN answers an expired URL with *status* (403,
        as S3 and R2 do for an expired signature; 401 possible). A fresh redirect asked of the registry
        afterwards works."""
        with self._lock:
            self._cdn_expired_left = count
            self._cdn_denied_status = status

    def cdn_fail(self, count: int, status: int = 503) -> None:
        """Answer the next *count* CDN requests that carry a valid signature with *status* (a CDN 5xx)."""
        with self._lock:
            self._cdn_fail_left = count
            self._cdn_fail_status = status

    def set_faults(
        self,
        rate: float,
        seed: int = 0,
        kinds: Iterable[str] = FAULT_KINDS,
        paths: Iterable[str] = ("blobs", "manifests"),
    ) -> None:
        """Fail a fraction *rate* of GETs that carry a body, deterministically for *seed*.

        Whether the n-th GET of a given path fails, and how, depends only on (seed, path, n): the same
        sequence of requests sees the same faults, even when paths are fetched concurrently, and a
        retry (n+1) gets a fresh draw. *paths* selects ``blobs`` (served by the CDN), ``manifests``
        and ``tags``. ``rate=0`` switches faults off.
        """
        ks = tuple(sorted(set(kinds)))
        if unknown := set(ks) - FAULT_KINDS:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; expected some of {sorted(FAULT_KINDS)}")
        with self._lock:
            self._faults = _Faults(rate, seed, ks, frozenset(paths)) if rate > 0 and ks else None

    def set_delay(self, seconds: float) -> None:
        """Hold every blob download on the CDN for *seconds* before its first byte (a slow link: runs that
        last long enough to be watched, triggered or stopped while they copy). Lowering it also shortens
        the holds under way: ``set_delay(3600)`` … ``set_delay(0)`` holds a run until released."""
        with self._lock:
            self._blob_delay = seconds

    def fail_always(self, match: FaultMatcher | None, status: int = 500) -> None:
        """Answer every matching Hub request with *status* until cleared with ``fail_always(None)``."""
        with self._lock:
            self._fail_always = _matcher(match)
            self._fail_status = status

    def send_head_digest(self, send: bool) -> None:
        """With False, manifest HEADs answer without ``Docker-Content-Digest`` (as some registries do):
        a client must then GET the manifest to learn its digest."""
        with self._lock:
            self._head_digest = send

    def referrers_api(self, enabled: bool) -> None:
        """With True, answer the OCI 1.1 referrers API (``GET /v2/<repo>/referrers/<digest>``) from the
        upstream's tag-schema indexes (``sha256-<hex>``), and hide those tags from ``tags/list``, as a
        registry with the API does; with False (the default) the API is absent (404, as Distribution 2.8)."""
        with self._lock:
            self._referrers_api = enabled

    def set_pushed(self, repo: str, tag: str, when: datetime) -> None:
        """The push time the tags API gives for *repo*:*tag* (default: when the API first saw the tag)."""
        with self._lock:
            self._pushed[(repo, tag)] = when

    def expire_tokens(self) -> None:
        """Make every token issued so far expired (the next request with one gets a 401)."""
        with self._lock:
            for tok in self._tokens.values():
                tok.expires_at = 0.0

    # -- counters --------------------------------------------------------------------------------

    @property
    def records(self) -> list[RequestRecord]:
        """Every Hub request so far, in arrival order (a copy)."""
        with self._lock:
            return list(self._records)

    @property
    def cdn_records(self) -> list[CdnRecord]:
        with self._lock:
            return list(self._cdn_records)

    @property
    def counts(self) -> Counter[tuple[str, str, str, int]]:
        """Requests per (method, kind, repo, status)."""
        with self._lock:
            return Counter((r.method, r.kind, r.repo, r.status) for r in self._records)

    def _count(self, method: str, kind: str, repo: str | None, ref: str | None = None) -> int:
        with self._lock:
            return sum(
                1
                for r in self._records
                if r.method == method
                and r.kind == kind
                and (repo is None or r.repo == repo)
                and (ref is None or r.ref == ref)
                and r.status not in (401, 403)
            )

    def manifest_gets(self, repo: str | None = None) -> int:
        """Manifest GETs that passed authentication (what a client spent or tried to spend)."""
        return self._count("GET", "manifest", repo)

    def manifest_heads(self, repo: str | None = None) -> int:
        return self._count("HEAD", "manifest", repo)

    def blob_gets(self, digest: str | None = None) -> int:
        """Blob GETs on the Hub port (each answered by a redirect to the CDN, or an error)."""
        return self._count("GET", "blob", None, digest)

    def token_requests(self) -> int:
        return self._count("GET", "token", None)

    def tags_api_requests(self, repo: str | None = None) -> int:
        """Requests to the repository tags API (any status), for ``NS/REPO`` or all repositories."""
        with self._lock:
            return sum(1 for r in self._records if r.kind == "tags-api" and (repo is None or r.repo == repo))

    def cdn_gets(self, digest: str | None = None) -> int:
        with self._lock:
            return sum(1 for r in self._cdn_records if digest is None or r.digest == digest)

    @property
    def cdn_saw_authorization(self) -> bool:
        """True if any request to the CDN port carried an ``Authorization`` header (a credential leak)."""
        with self._lock:
            return any(r.had_authorization for r in self._cdn_records)

    def reset_counts(self) -> None:
        with self._lock:
            self._records.clear()
            self._cdn_records.clear()

    # -- the Hub port ----------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        kind, repo, ref = _classify(path)
        user: str | None = None
        resp: web.StreamResponse
        try:
            with self._lock:
                now = time.monotonic()
                retry_after = self._abuse_retry_after
                allowed = 44000
                abused = self._abuse_left > 0 and (self._abuse_match is None or self._abuse_match(request.method, path))
                if abused:
                    self._abuse_left -= 1
                elif self._abuse_limit is not None and path != "/token":
                    self._recent = [t for t in self._recent if now - t < 1.0]
                    abused = len(self._recent) >= self._abuse_limit
                    if not abused:
                        self._recent.append(now)
                    elif self._abuse_message:  # Hub says how long until a request would pass
                        retry_after = max(0.0, 1.0 - (now - self._recent[0]))
                        allowed = self._abuse_limit * 60
                message = abused and self._abuse_message
                dressed = abused and self._abuse_like_quota
                # The quota headers: on every path when dressed like the quota, else as Hub sends them (on
                # manifest requests, when the account has a quota).
                quota = self._quota if dressed or (message and kind == "manifest") else None
                quota_headers = self._ratelimit_headers(quota) if quota is not None else {}
                throttled = self._token_throttle.take(time.monotonic()) if path == "/token" and not abused else None
            if abused and message:
                text = f"retry-after: {go_duration(retry_after)}, allowed: {allowed}/minute"
                resp = _error(429, "TOOMANYREQUESTS", text)
                resp.headers.update(quota_headers)
            elif abused:
                headers = {"Retry-After": _fmt_seconds(retry_after), **quota_headers}
                if dressed:
                    resp = _error(429, "TOOMANYREQUESTS", "Too Many Requests")
                    resp.headers.update(headers)
                else:
                    resp = web.Response(status=429, text="Too Many Requests\n", headers=headers)
            elif throttled is not None:
                kind = "token"
                status, token_retry_after = throttled
                resp = web.Response(status=status, text=f"{_REASONS.get(status, 'Error')}\n")
                if token_retry_after is not None:
                    resp.headers["Retry-After"] = _fmt_seconds(token_retry_after)
            elif path == "/token":
                kind = "token"
                with self._lock:
                    hide_unknown = self._hide_unknown
                unknown = await self._unknown_repos(request) if hide_unknown else frozenset()
                reset = _UNKNOWN_REPOS.set(unknown)
                try:
                    resp, user = self._token(request)
                finally:
                    _UNKNOWN_REPOS.reset(reset)
            elif m := _TAGS_API_ROUTE.match(path):
                kind, repo = "tags-api", f"{m.group('ns') or m.group('ns2')}/{m.group('repo') or m.group('repo2')}"
                resp = await self._tags_api(request, repo)
            elif m := _TAG_API_ROUTE.match(path):
                kind, repo, ref = "tags-api", f"{m.group('ns')}/{m.group('repo')}", m.group("tag")
                resp = await self._tag_api(request, repo, ref)
            elif not path.startswith("/v2/"):
                resp = web.Response(status=404, text="404 page not found\n")
            else:
                resp, user = await self._v2(request, kind, repo, ref)
        except Exception as e:
            resp = _error(500, "UNKNOWN", f"hub emulator: {type(e).__name__}: {e}")
        with self._lock:
            self._records.append(RequestRecord(request.method, kind, repo, ref, resp.status, user, at=time.monotonic()))
        return resp

    def _token(self, request: web.Request) -> tuple[web.StreamResponse, str | None]:
        user: str | None = None
        header = request.headers.get("Authorization", "")
        if header.lower().startswith("basic "):
            try:
                name, _, password = base64.b64decode(header[6:].strip()).decode().partition(":")
            except ValueError:
                name, password = "", ""
            expected = self._users.get(name)
            if expected is None or not hmac.compare_digest(expected, password):
                return web.json_response({"details": "incorrect username or password"}, status=401), None
            user = name
        access: dict[str, set[str]] = {}
        unknown = _UNKNOWN_REPOS.get()
        for scope in request.query.getall("scope", []):
            for name, actions in _parse_scope(scope):
                granted = {"pull"} & actions
                if "push" in actions and self.allow_push and user is not None:
                    granted.add("push")
                elif name in unknown:
                    granted = set()  # Hub: a token without access to it, not an error
                if granted:
                    access.setdefault(name, set()).update(granted)
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[token] = _Token(user, access, time.monotonic() + self.expires_in)
        body = {
            "token": token,
            "access_token": token,
            "expires_in": self.expires_in,
            "issued_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        return web.json_response(body), user

    async def _unknown_repos(self, request: web.Request) -> frozenset[str]:
        """The repositories a token request names that the upstream registry does not have."""
        assert self._session is not None
        unknown = set()
        for scope in request.query.getall("scope", []):
            for name, _ in _parse_scope(scope):
                async with self._session.get(f"{self.upstream.url}/v2/{name}/tags/list") as up:
                    await up.read()
                    if up.status != 200:
                        unknown.add(name)
        return frozenset(unknown)

    async def _referrers(self, repo: str, digest: str) -> web.Response:
        """The referrers of *digest*: the entries of the upstream's ``sha256-<hex>`` index (empty if none)."""
        assert self._session is not None
        tag = digest.replace(":", "-", 1)
        accept = {"Accept": "application/vnd.oci.image.index.v1+json"}
        async with self._session.get(f"{self.upstream.url}/v2/{repo}/manifests/{tag}", headers=accept) as up:
            entries = (json.loads(await up.read()).get("manifests") or []) if up.status == 200 else []
        body = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries}
        return web.json_response(body, content_type="application/vnd.oci.image.index.v1+json")

    # -- the repository tags API (hub.docker.com, reference §F.4) ----------------------------------

    async def _tags_api(self, request: web.Request, repo: str) -> web.Response:
        """``{count, next, previous, results}``, newest push first; anonymous; no pulls counted. Its busy
        modes (429 + ``X-Retry-After``, tags moving while listed, small pages) are switched with
        `hubmirror.testing.tags_api.tags_api_modes`."""
        from .tags_api import tags_api_modes

        modes = tags_api_modes(self)
        with self._lock:
            failing = self._fail_always is not None and self._fail_always(request.method, request.path)
            fail_status = self._fail_status
        if failing:
            return web.json_response({"message": "injected persistent failure"}, status=fail_status)
        throttled = modes.throttled()
        if throttled is not None:
            return web.json_response({"message": "Too Many Requests", "errinfo": {}}, status=429, headers=throttled)
        if request.method != "GET":
            return web.json_response({"message": "method not allowed"}, status=405)
        try:
            size = min(max(int(request.query.get("page_size", "10")), 1), 100, modes.max_page_size())
            page = max(int(request.query.get("page", "1")), 1)
        except ValueError:
            return web.json_response({"message": "invalid page or page_size"}, status=400)
        assert self._session is not None
        async with self._session.get(f"{self.upstream.url}/v2/{repo}/tags/list") as up:
            tags = list((await up.json(content_type=None)).get("tags") or []) if up.status == 200 else []
        if not tags:
            return web.json_response({"message": "object not found", "errinfo": {}}, status=404)
        now = datetime.now(UTC)
        results = []
        for tag in tags:
            with self._lock:
                pushed = self._pushed.setdefault((repo, tag), now)
            results.append(await self._tag_result(repo, tag, pushed))
        results.sort(key=lambda r: (r["tag_last_pushed"], r["name"]), reverse=True)
        chunk = results[(page - 1) * size : page * size]

        def link(p: int) -> str:
            return f"{self.url}{request.path}?{urlencode({'page_size': size, 'page': p})}"

        body = {
            "count": len(results),
            "next": link(page + 1) if page * size < len(results) else None,
            "previous": link(page - 1) if page > 1 else None,
            "results": chunk,
        }
        if body["next"] is not None and modes.take_move(repo):
            # The oldest tag is pushed again while the client pages: it moves to the first page.
            with self._lock:
                newest = max(self._pushed[(repo, t)] for t in tags)
                self._pushed[(repo, results[-1]["name"])] = max(
                    datetime.now(UTC), datetime.fromtimestamp(newest.timestamp() + 0.001, UTC)
                )
        return web.json_response(body)

    async def _tag_api(self, request: web.Request, repo: str, tag: str) -> web.Response:
        """One tag, as the list's results show it; 404 for a tag the upstream registry does not have."""
        with self._lock:
            failing = self._fail_always is not None and self._fail_always(request.method, request.path)
            fail_status = self._fail_status
        if failing:
            return web.json_response({"message": "injected persistent failure"}, status=fail_status)
        if request.method != "GET":
            return web.json_response({"message": "method not allowed"}, status=405)
        assert self._session is not None
        async with self._session.head(
            f"{self.upstream.url}/v2/{repo}/manifests/{tag}", headers={"Accept": ACCEPT}
        ) as up:
            if up.status != 200:
                return web.json_response({"message": "object not found", "errinfo": {}}, status=404)
        with self._lock:
            pushed = self._pushed.setdefault((repo, tag), datetime.now(UTC))
        return web.json_response(await self._tag_result(repo, tag, pushed))

    async def _tag_result(self, repo: str, tag: str, pushed: datetime) -> dict[str, Any]:
        """One tag as the API shows it: digest from the upstream registry, platforms from its manifest."""
        assert self._session is not None
        accept = {"Accept": ACCEPT}
        async with self._session.get(f"{self.upstream.url}/v2/{repo}/manifests/{tag}", headers=accept) as up:
            digest = up.headers.get("Docker-Content-Digest", "")
            manifest = json.loads(await up.read()) if up.status == 200 else {}
        when = pushed.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        with self._lock:
            images = self._tag_details.get((repo, digest))
        if images is None:
            images = []
            for child in manifest.get("manifests") or []:
                plat = child.get("platform") or {}
                if plat.get("os") and plat.get("os") != "unknown":
                    images.append(
                        {
                            "architecture": plat.get("architecture"),
                            "variant": plat.get("variant"),
                            "os": plat.get("os"),
                            "digest": child.get("digest"),
                            "size": child.get("size", 0),
                            "status": "active",
                            "last_pushed": when,
                        }
                    )
            if "config" in manifest:
                async with self._session.get(
                    f"{self.upstream.url}/v2/{repo}/blobs/{manifest['config']['digest']}"
                ) as c:
                    cfg = json.loads(await c.read()) if c.status == 200 else {}
                images.append(
                    {
                        "architecture": cfg.get("architecture"),
                        "variant": cfg.get("variant"),
                        "os": cfg.get("os"),
                        "digest": digest,
                        "size": 0,
                        "status": "active",
                        "last_pushed": when,
                    }
                )
            with self._lock:
                self._tag_details[(repo, digest)] = images
        return {
            "name": tag,
            "digest": digest,
            "last_updated": when,
            "tag_last_pushed": when,
            "tag_status": "active",
            "images": images,
        }

    def _challenge(self, repo: str, actions: str, error: str | None = None) -> web.Response:
        value = f'Bearer realm="{self.token_url}",service="{SERVICE}"'
        if repo:
            value += f',scope="repository:{repo}:{actions}"'
        if error:
            value += f',error="{error}"'
        resp = _error(401, "UNAUTHORIZED", "authentication required")
        resp.headers["WWW-Authenticate"] = value
        return resp

    async def _v2(self, request: web.Request, kind: str, repo: str, ref: str) -> tuple[web.StreamResponse, str | None]:
        method = request.method
        needs_push = method in _PUSH_METHODS
        header = request.headers.get("Authorization", "")
        bearer = header[7:].strip() if header.lower().startswith("bearer ") else ""
        with self._lock:
            tok = self._tokens.get(bearer)
            valid = tok is not None and tok.expires_at > time.monotonic()
        actions = "pull,push" if needs_push else "pull"
        if tok is None or not valid:
            return self._challenge(repo, actions, "invalid_token" if bearer else None), None
        user = tok.user
        if repo:
            have = tok.access.get(repo, set())
            need = {"pull", "push"} if needs_push else {"pull"}
            if not need <= have:
                could = not needs_push or (self.allow_push and user is not None)
                if could:
                    return self._challenge(repo, actions, "insufficient_scope"), user
                return _error(403, "DENIED", "requested access to the resource is denied"), user
        with self._lock:
            failing = self._fail_always is not None and self._fail_always(method, request.path)
            fail_status = self._fail_status
        if failing:
            return _error(fail_status, "UNKNOWN", "injected persistent failure"), user
        if kind == "manifest" and method in ("GET", "HEAD"):
            return await self._manifest(request, ref), user
        if kind == "blob" and method == "GET" and ref.startswith("sha"):
            return await self._blob_redirect(request, repo, ref), user
        with self._lock:
            referrers = self._referrers_api
        if kind == "referrers" and method == "GET" and referrers:
            return await self._referrers(repo, ref), user
        status, headers, body = await self._forward(request)
        if kind == "tag-list" and referrers and status == 200:
            obj = json.loads(body)
            obj["tags"] = [t for t in obj.get("tags") or [] if not _REFERRERS_TAG.match(t)]
            body = json.dumps(obj).encode()
            headers.pop("Content-Length", None)
        fault_path = "tags" if kind == "tag-list" else ""
        return self._respond(request, status, headers, body, fault_path), user

    async def _manifest(self, request: web.Request, ref: str) -> web.StreamResponse:
        is_get = request.method == "GET"
        taken: _Quota | None = None
        with self._lock:
            quota = self._quota
            if quota is not None:
                quota.roll(time.monotonic())
                if is_get and quota.remaining <= 0:
                    resp = _error(429, "TOOMANYREQUESTS", PULL_LIMIT_MESSAGE)
                    resp.headers.update(self._ratelimit_headers(quota))
                    return resp
                if is_get:  # take the pull now, so concurrent GETs cannot all pass the check
                    quota.remaining -= 1
                    taken = quota
        status, headers, body = await self._forward(request)
        with self._lock:
            if taken is not None and status != 200 and taken is self._quota:
                taken.remaining = min(taken.limit, taken.remaining + 1)  # only served manifests count
            quota = self._quota
            if quota is not None:
                headers.update(self._ratelimit_headers(quota))
            if not is_get and not self._head_digest:
                headers.pop("Docker-Content-Digest", None)
        return self._respond(request, status, headers, body, "manifests")

    def _ratelimit_headers(self, quota: _Quota) -> dict[str, str]:
        return {
            "ratelimit-limit": f"{quota.limit};w={quota.window}",
            "ratelimit-remaining": f"{quota.remaining};w={quota.window}",
            "docker-ratelimit-source": self.source,
        }

    async def _blob_redirect(self, request: web.Request, repo: str, digest: str) -> web.StreamResponse:
        assert self._session is not None
        async with self._session.head(f"{self.upstream.url}/v2/{repo}/blobs/{digest}") as up:
            status = up.status
        if status == 404:
            return _error(404, "BLOB_UNKNOWN", "blob unknown to registry")
        if status != 200:
            return _error(status, "UNKNOWN", f"upstream answered {status}")
        with self._lock:
            expired = self._cdn_expired_left > 0
            if expired:
                self._cdn_expired_left -= 1
            lifetime = self._cdn_lifetime
        expires = str(int(time.time() - 1 if expired else time.time() + lifetime))
        query = {"repo": repo, "expires": expires, "sig": self._sign(repo, digest, expires)}
        location = f"{self.cdn_url}/blobs/{digest}?{urlencode(query)}"
        return web.Response(status=307, headers={"Location": location})

    def _sign(self, repo: str, digest: str, expires: str) -> str:
        return hmac.new(self._sign_key, f"{repo}\n{digest}\n{expires}".encode(), hashlib.sha256).hexdigest()

    async def _forward(self, request: web.Request) -> tuple[int, dict[str, str], bytes]:
        """Send *request* to the upstream registry; its status, passed headers and body."""
        assert self._session is not None
        # Clients may send Accept as several header lines (skopeo does): pass every value on.
        headers = {h: ", ".join(request.headers.getall(h)) for h in _FORWARD_REQUEST_HEADERS if h in request.headers}
        data: Any = request.content if request.body_exists else None
        async with self._session.request(
            request.method,
            f"{self.upstream.url}{request.rel_url}",
            headers=headers,
            data=data,
            allow_redirects=False,
        ) as up:
            body = await up.read()
            out = {h: up.headers[h] for h in _PASS_RESPONSE_HEADERS if h in up.headers}
            if request.method == "HEAD" and "Content-Length" in up.headers:
                out["Content-Length"] = up.headers["Content-Length"]
            for h in ("Location", "Link"):
                if h in out:
                    out[h] = out[h].replace(self.upstream.url, self.url)
            return up.status, out, body

    def _respond(
        self, request: web.Request, status: int, headers: dict[str, str], body: bytes, fault_path: str
    ) -> web.StreamResponse:
        if request.method == "HEAD":
            length = headers.pop("Content-Length", None)
            resp = web.Response(status=status, headers=headers)
            if length is not None:
                resp.headers["Content-Length"] = length
            return resp
        fault = self._draw_fault(request.method, request.path, fault_path) if status == 200 else None
        if fault is None:
            return web.Response(status=status, headers=headers, body=body)
        return _FaultyResponse(fault, status, headers, body, self._fault_position(request.path, len(body)))

    def _draw_fault(self, method: str, path: str, fault_path: str) -> str | None:
        with self._lock:
            faults = self._faults
            if method != "GET" or faults is None or fault_path not in faults.paths:
                return None
            n = faults.attempts[path]
            faults.attempts[path] += 1
        h = hashlib.sha256(f"{faults.seed}\n{path}\n{n}".encode()).digest()
        if int.from_bytes(h[:8], "big") / 2**64 >= faults.rate:
            return None
        return faults.kinds[int.from_bytes(h[8:12], "big") % len(faults.kinds)]

    def _fault_position(self, path: str, size: int) -> int:
        """Where a truncate/reset cuts or a flip changes a byte: inside the body, fixed per path."""
        if size <= 1:
            return 0
        h = hashlib.sha256(f"pos\n{path}".encode()).digest()
        return 1 + int.from_bytes(h[:8], "big") % (size - 1)

    # -- the CDN port ----------------------------------------------------------------------------

    async def _handle_cdn(self, request: web.Request) -> web.StreamResponse:
        digest = request.match_info["digest"]
        repo = request.query.get("repo", "")
        expires = request.query.get("expires", "0")

        def record(status: int) -> None:
            # Recorded before any body byte is sent, so a client that has read the blob sees it counted.
            with self._lock:
                self._cdn_records.append(CdnRecord(repo, digest, status, "Authorization" in request.headers))

        held = time.monotonic()
        while True:  # re-read: lowering the delay (to 0) releases downloads already held
            with self._lock:
                delay = self._blob_delay
            if time.monotonic() - held >= delay:
                break
            await asyncio.sleep(min(0.05, delay))
        sig_ok = hmac.compare_digest(request.query.get("sig", ""), self._sign(repo, digest, expires))
        if not sig_ok:
            record(403)
            return web.Response(status=403, text="<Error><Code>AccessDenied</Code></Error>")
        if not expires.isdigit() or int(expires) < time.time():
            with self._lock:
                status = self._cdn_denied_status
            record(status)
            text = "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"
            return web.Response(status=status, text=text, content_type="application/xml")
        with self._lock:
            failing = self._cdn_fail_left > 0
            if failing:
                self._cdn_fail_left -= 1
            fail_status = self._cdn_fail_status
        if failing:
            record(fail_status)
            return web.Response(status=fail_status, text=f"{_REASONS.get(fail_status, 'Error')}\n")
        return await self._cdn_stream(request, repo, digest, record)

    async def _cdn_stream(
        self, request: web.Request, repo: str, digest: str, record: Callable[[int], None]
    ) -> web.StreamResponse:
        assert self._session is not None
        headers = {"Range": request.headers["Range"]} if "Range" in request.headers else {}
        async with self._session.get(
            f"{self.upstream.url}/v2/{repo}/blobs/{digest}", headers=headers, allow_redirects=False
        ) as up:
            if up.status not in (200, 206):
                record(up.status)
                return web.Response(status=up.status, body=await up.read())
            out = {h: up.headers[h] for h in ("Content-Type", "Content-Range", "Accept-Ranges") if h in up.headers}
            out["Content-Type"] = out.get("Content-Type", "application/octet-stream")
            size = int(up.headers.get("Content-Length", "0"))
            fault = self._draw_fault("GET", request.path, "blobs")
            cut = self._fault_position(request.path, size) if fault else -1
            if fault == "500":
                record(500)
                return _error(500, "UNKNOWN", "injected fault")
            record(up.status)
            resp = web.StreamResponse(status=up.status, headers=out)
            resp.content_length = size
            await resp.prepare(request)
            sent = 0
            try:
                async for chunk in up.content.iter_chunked(_CHUNK):
                    if fault in ("reset", "truncate") and sent + len(chunk) >= cut:
                        await resp.write(chunk[: cut - sent])
                        _drop(request, reset=fault == "reset")
                        return resp
                    if fault == "flip" and sent <= cut < sent + len(chunk):
                        i = cut - sent
                        chunk = chunk[:i] + bytes([chunk[i] ^ 0xFF]) + chunk[i + 1 :]
                    await resp.write(chunk)
                    sent += len(chunk)
                await resp.write_eof()
            except ConnectionResetError:  # the client went away mid-blob (a worker killed, a stall given up)
                pass
            return resp


class _FaultyResponse(web.StreamResponse):
    """A 200 response that is corrupted on the way out: cut, reset, flipped, or turned into a 500."""

    def __init__(self, fault: str, status: int, headers: dict[str, str], body: bytes, pos: int) -> None:
        if fault == "500":
            super().__init__(status=500, headers={"Content-Type": "application/json"})
            body = json.dumps({"errors": [{"code": "UNKNOWN", "message": "injected fault"}]}).encode()
        else:
            super().__init__(status=status, headers=headers)
        self._fault = fault
        self._body_bytes = body
        self._pos = pos
        self.content_length = len(body)

    async def prepare(self, request: web.BaseRequest) -> Any:
        writer = await super().prepare(request)
        if self._fault in ("500", "flip"):
            data = self._body_bytes
            if self._fault == "flip" and data:
                data = data[: self._pos] + bytes([data[self._pos] ^ 0xFF]) + data[self._pos + 1 :]
            await super().write(data)
            return writer
        await super().write(self._body_bytes[: self._pos])
        _drop(request, reset=self._fault == "reset")
        return writer


def _drop(request: web.BaseRequest, *, reset: bool) -> None:
    """Close the connection under a response: with a TCP RST (*reset*) or a plain FIN (truncation)."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if reset and sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    else:
        transport.close()


def _classify(path: str) -> tuple[str, str, str]:
    """(kind, repo, ref) of a Hub request path."""
    m = _REPO_ROUTE.match(path)
    if not m:
        return "other", "", ""
    name, kind, rest = m.group("name"), m.group("kind"), m.group("rest")
    if kind == "manifests":
        return "manifest", name, rest
    if kind == "tags":
        return ("tag-list" if rest == "list" else "other"), name, ""
    if kind == "referrers":
        return "referrers", name, rest
    if rest.startswith("uploads"):
        return "other", name, ""
    return "blob", name, rest


def _parse_scope(scope: str) -> list[tuple[str, set[str]]]:
    """``repository:library/a:pull,push`` (space-separated lists too) → [(name, actions)]."""
    out = []
    for item in scope.split():
        rtype, _, rest = item.partition(":")
        name, _, actions = rest.rpartition(":")
        if rtype == "repository" and name:
            out.append((name, {a for a in actions.split(",") if a}))
    return out


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"errors": [{"code": code, "message": message}]}, status=status)


def _matcher(match: FaultMatcher | None) -> Callable[[str, str], bool] | None:
    """A (method, path) predicate from a `FaultMatcher` (a regex searched in the path, or a callable)."""
    if match is None or callable(match):
        return match
    rx = re.compile(match)
    return lambda _method, path: bool(rx.search(path))


def _fmt_seconds(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


def go_duration(seconds: float) -> str:
    """*seconds* as Go prints a ``time.Duration``: ``985.86µs``, ``250ms``, ``1.5s``, ``2m0s``, ``0s``."""
    if seconds <= 0:
        return "0s"
    if seconds < 1e-3:
        return f"{_trim(seconds * 1e6)}µs"
    if seconds < 1:
        return f"{_trim(seconds * 1e3)}ms"
    minutes, rest = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    text = f"{_trim(rest)}s"
    if minutes or hours:
        text = f"{minutes}m{text}"
    return f"{hours}h{text}" if hours else text


def _trim(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _listen() -> tuple[socket.socket, int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock, int(sock.getsockname()[1])
