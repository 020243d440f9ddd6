"""Content-mirror emulators: a proxy in front of a real registry that answers as a public content mirror does
(reference §F.1), each in a background thread like the Hub emulator (`hubmirror.testing.hub`).

* `EcrLikeMirror` — Amazon ECR Public (``public.ecr.aws/docker/library/<name>``): bearer tokens from its own
  ``/token`` (anonymous, or with Basic credentials); **400** ``DENIED`` for a bearer it does not honour (an
  unknown, garbled or expired token — it sends no challenge; aws/containers-roadmap #2835, dependabot/proxy
  #157, lablup/backend.ai #2549), **403** ``DENIED`` "Your authorization token has expired" for a token got
  with a stale ``docker login`` where an anonymous one works (aws/containers-roadmap #1296,
  awslabs/amazon-ecr-credential-helper #286), and a per-second limit on pulls answered with **429**
  ``TOOMANYREQUESTS`` "Rate exceeded" (about 1 a second anonymous, 10 logged in; aws/aws-lambda-web-adapter
  #429, dependabot/dependabot-core #11921).
* `GcrLikeMirror` — mirror.gcr.io: anonymous, and holding only what is pulled often; it never fetches what
  it lacks, and answers the rest with **404** ``MANIFEST_UNKNOWN`` "Failed to fetch …" or **500**
  (containers/podman #19409, GoogleContainerTools/jib #2916, containerd/containerd #6015).

Both serve whatever their upstream ``docker-registry`` holds, at the paths of the mirror (seed the upstream
with ``seed_library(…, prefix="docker")`` for ECR's layout). Controls and counters may be used from any
thread; `records` lists every request answered.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import aiohttp
from aiohttp import web

from ._threaded import ThreadedServer
from .registry import Registry

_REPO_ROUTE = re.compile(r"^/v2/(?P<name>.+?)/(?P<kind>manifests|blobs|tags)/(?P<rest>.*)$")
_FORWARD_REQUEST_HEADERS = ("Accept", "Range", "If-None-Match")
_PASS_RESPONSE_HEADERS = (
    "Content-Type",
    "Content-Length",
    "Content-Range",
    "Accept-Ranges",
    "Docker-Content-Digest",
    "Docker-Distribution-API-Version",
    "Etag",
    "Link",
)
_CHUNK = 256 * 1024

#: ECR Public's service name in its challenge, and its answers (as reported; see the module docstring).
ECR_SERVICE = "public.ecr.aws"
ECR_INVALID = "Your Authorization Token is invalid."
ECR_EXPIRED = "Your authorization token has expired. Reauthenticate and try again."
ECR_THROTTLED = "Rate exceeded"

MissStatus = Literal[404, 500, "mixed"]


@dataclass(frozen=True)
class MirrorRecord:
    """One request a mirror emulator answered."""

    method: str
    kind: str  # manifest | blob | tag-list | token | ping | other
    repo: str
    ref: str
    status: int
    at: float  # time.monotonic() when it arrived


class MirrorEmulator(ThreadedServer):
    """A registry proxy on ``127.0.0.1`` (a free port) in front of *upstream*; subclasses add the manners."""

    def __init__(self, upstream: Registry) -> None:
        super().__init__()
        self.upstream = upstream
        self._lock = threading.Lock()
        self._records: list[MirrorRecord] = []
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._port = 0

    # -- lifecycle -------------------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def _thread_name(self) -> str:
        return f"{type(self).__name__}->{self.upstream.host}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={self.url!r}, upstream={self.upstream.url!r})"

    async def _setup(self) -> None:
        self._session = aiohttp.ClientSession(
            headers=self.upstream.auth_headers(),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            auto_decompress=False,
        )
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._port = int(sock.getsockname()[1])
        await web.SockSite(self._runner, sock).start()

    async def _teardown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    # -- counters --------------------------------------------------------------------------------------

    @property
    def records(self) -> list[MirrorRecord]:
        """Every request answered so far, in arrival order (a copy)."""
        with self._lock:
            return list(self._records)

    def count(self, *, kind: str | None = None, status: int | None = None, method: str | None = None) -> int:
        """Requests answered, of *kind* / with *status* / by *method* where given."""
        with self._lock:
            return sum(
                1
                for r in self._records
                if (kind is None or r.kind == kind)
                and (status is None or r.status == status)
                and (method is None or r.method == method)
            )

    def served(self, kind: str) -> set[str]:
        """The refs (digests) of *kind* answered with content (GET 200/206)."""
        with self._lock:
            return {r.ref for r in self._records if r.kind == kind and r.method == "GET" and r.status in (200, 206)}

    # -- serving ---------------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        kind, repo, ref = _classify(request.path)
        try:
            resp = await self._answer(request, kind, repo, ref)
        except Exception as e:
            resp = _error(500, "UNKNOWN", f"mirror emulator: {type(e).__name__}: {e}")
        with self._lock:
            self._records.append(MirrorRecord(request.method, kind, repo, ref, resp.status, time.monotonic()))
        return resp

    async def _answer(self, request: web.Request, kind: str, repo: str, ref: str) -> web.StreamResponse:
        if kind in ("ping", "manifest", "blob", "tag-list") and request.method in ("GET", "HEAD"):
            return await self._forward(request)
        return _error(405, "UNSUPPORTED", "a content mirror is read-only")

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        """The upstream's answer to *request*, body streamed."""
        assert self._session is not None
        headers = {h: ", ".join(request.headers.getall(h)) for h in _FORWARD_REQUEST_HEADERS if h in request.headers}
        async with self._session.request(
            request.method, f"{self.upstream.url}{request.rel_url}", headers=headers, allow_redirects=False
        ) as up:
            out = {h: up.headers[h] for h in _PASS_RESPONSE_HEADERS if h in up.headers}
            if request.method == "HEAD":
                length = out.pop("Content-Length", None)
                head = web.Response(status=up.status, headers=out)
                if length is not None:
                    head.headers["Content-Length"] = length
                return head
            length = out.pop("Content-Length", None)
            resp = web.StreamResponse(status=up.status, headers=out)
            if length is not None:
                resp.content_length = int(length)
            await resp.prepare(request)
            try:
                async for chunk in up.content.iter_chunked(_CHUNK):
                    await resp.write(chunk)
                await resp.write_eof()
            except (ConnectionError, OSError):
                pass  # the client hung up
            return resp


@dataclass
class _EcrToken:
    stale: bool  # got with Basic credentials of a stale `docker login`
    good_until: float  # time.monotonic() after which the token is answered 400


class EcrLikeMirror(MirrorEmulator):
    """ECR Public's manners in front of *upstream*: see the module docstring.

    *per_second*: pulls (manifest and blob requests, HEADs included) allowed per second from all clients
    (None: no limit); over it, 429. *token_lifetime*: seconds a token is honoured, whatever ``expires_in``
    said (None: for ever). *stale_logins*: a token got with Basic credentials answers 403.
    """

    def __init__(
        self,
        upstream: Registry,
        *,
        per_second: int | None = None,
        token_lifetime: float | None = None,
        stale_logins: bool = False,
    ) -> None:
        super().__init__(upstream)
        self._per_second = per_second
        self._token_lifetime = token_lifetime
        self._stale_logins = stale_logins
        self._tokens: dict[str, _EcrToken] = {}
        self._recent: list[float] = []

    # -- controls --------------------------------------------------------------------------------------

    def set_limit(self, per_second: int | None) -> None:
        """Allow *per_second* pulls a second (None: no limit)."""
        with self._lock:
            self._per_second = per_second
            self._recent.clear()

    def set_token_lifetime(self, seconds: float | None) -> None:
        """Honour each token issued from now on for *seconds* only (None: for ever)."""
        with self._lock:
            self._token_lifetime = seconds

    def set_stale_logins(self, stale: bool) -> None:
        """Treat tokens got with Basic credentials as a stale ``docker login`` (403)."""
        with self._lock:
            self._stale_logins = stale

    @property
    def throttled(self) -> int:
        """Requests answered 429."""
        return self.count(status=429)

    def max_per_second(self) -> int:
        """The most pulls served within any one second (what the limit allowed through)."""
        with self._lock:
            times = sorted(
                r.at for r in self._records if r.kind in ("manifest", "blob") and r.status in (200, 206, 307, 404)
            )
        most, j = 0, 0
        for i, t in enumerate(times):
            while times[j] <= t - 1.0:
                j += 1
            most = max(most, i - j + 1)
        return most

    # -- serving ---------------------------------------------------------------------------------------

    async def _answer(self, request: web.Request, kind: str, repo: str, ref: str) -> web.StreamResponse:
        if kind == "token":
            return self._token(request)
        header = request.headers.get("Authorization", "")
        if kind == "ping" and not header:
            return self._challenge("")
        if kind not in ("ping", "manifest", "blob", "tag-list"):
            return await super()._answer(request, kind, repo, ref)
        if not header:
            return self._challenge(repo)
        if not header.lower().startswith("bearer "):
            return _error(400, "DENIED", ECR_INVALID)  # Basic on the registry itself: ECR wants a bearer
        with self._lock:
            tok = self._tokens.get(header[7:].strip())
        if tok is None or time.monotonic() > tok.good_until:
            return _error(400, "DENIED", ECR_INVALID)  # no challenge: the client must think of it itself
        if tok.stale:
            return _error(403, "DENIED", ECR_EXPIRED)
        if kind in ("manifest", "blob") and self._over_limit():
            return _error(429, "TOOMANYREQUESTS", ECR_THROTTLED)
        return await super()._answer(request, kind, repo, ref)

    def _over_limit(self) -> bool:
        with self._lock:
            if self._per_second is None:
                return False
            now = time.monotonic()
            self._recent = [t for t in self._recent if now - t < 1.0]
            if len(self._recent) >= self._per_second:
                return True
            self._recent.append(now)
            return False

    def _challenge(self, repo: str) -> web.Response:
        value = f'Bearer realm="{self.url}/token",service="{ECR_SERVICE}"'
        if repo:
            value += ',scope="aws"'
        resp = _error(401, "DENIED", "Not Authorized")
        resp.headers["WWW-Authenticate"] = value
        return resp

    def _token(self, request: web.Request) -> web.Response:
        header = request.headers.get("Authorization", "")
        stale = False
        if header.lower().startswith("basic "):
            try:
                base64.b64decode(header[6:].strip(), validate=True)
            except ValueError:
                return web.json_response({"errors": [{"code": "DENIED", "message": ECR_INVALID}]}, status=400)
            with self._lock:
                stale = self._stale_logins
        token = secrets.token_urlsafe(24)
        with self._lock:
            life = self._token_lifetime
            self._tokens[token] = _EcrToken(stale, time.monotonic() + (life if life is not None else 1e9))
        return web.json_response({"token": token})


class GcrLikeMirror(MirrorEmulator):
    """mirror.gcr.io's manners in front of *upstream*: anonymous, and holding only *holds* (digests of
    manifests and blobs; None: everything its upstream has). Content by digest it does not hold answers
    *miss* (404 ``MANIFEST_UNKNOWN``, 500, or ``mixed``: either, fixed per digest)."""

    def __init__(self, upstream: Registry, *, holds: Iterable[str] | None = None, miss: MissStatus = "mixed") -> None:
        super().__init__(upstream)
        self._holds: set[str] | None = set(holds) if holds is not None else None
        self._miss: MissStatus = miss

    def hold_only(self, digests: Iterable[str] | None) -> None:
        """Hold exactly *digests* from now on (None: everything)."""
        with self._lock:
            self._holds = set(digests) if digests is not None else None

    def set_miss(self, miss: MissStatus) -> None:
        with self._lock:
            self._miss = miss

    @property
    def misses(self) -> int:
        """Requests for content it does not hold (answered 404 or 500)."""
        return self.count(status=404) + self.count(status=500)

    def miss_status(self, digest: str) -> int:
        """What a request for *digest*, not held, is answered with."""
        with self._lock:
            miss = self._miss
        if miss == "mixed":
            return 500 if hashlib.sha256(digest.encode()).digest()[0] % 2 else 404
        return miss

    async def _answer(self, request: web.Request, kind: str, repo: str, ref: str) -> web.StreamResponse:
        if kind in ("manifest", "blob") and ref.startswith("sha256:"):
            with self._lock:
                held = self._holds is None or ref in self._holds
            if not held:
                status = self.miss_status(ref)
                if status == 500:
                    return _error(500, "UNKNOWN", "unknown error")
                return _error(404, "MANIFEST_UNKNOWN", f'Failed to fetch "{ref}" from request "{request.path}".')
        return await super()._answer(request, kind, repo, ref)


def _classify(path: str) -> tuple[str, str, str]:
    """(kind, repo, ref) of a mirror request path."""
    if path == "/token":
        return "token", "", ""
    if path in ("/v2", "/v2/"):
        return "ping", "", ""
    m = _REPO_ROUTE.match(path)
    if not m:
        return "other", "", ""
    name, kind, rest = m.group("name"), m.group("kind"), m.group("rest")
    if kind == "manifests":
        return "manifest", name, rest
    if kind == "tags":
        return ("tag-list" if rest == "list" else "other"), name, ""
    if rest.startswith("uploads"):
        return "other", name, ""
    return "blob", name, rest


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"errors": [{"code": code, "message": message}]}, status=status)


__all__ = ["ECR_SERVICE", "EcrLikeMirror", "GcrLikeMirror", "MirrorEmulator", "MirrorRecord", "MissStatus"]
