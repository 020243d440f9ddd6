"""`RegistryClient`: the OCI distribution API of one registry host over one shared aiohttp session.

Manifests (HEAD/GET/PUT/DELETE, verified, 4 MiB cap), blobs (HEAD, streaming GET across redirects
without leaking ``Authorization``, a fresh redirect when a CDN's signed URL is refused, monolithic and
chunked uploads, cross-repository mount), tag listing with ``Link`` pagination. Authentication, retries
(abuse-limit 429s apart from the pull quota's), rate-limit headers, the pull gate and transfer counters
are handled here so callers only see results or `hubmirror` errors (a pull answered 401
``insufficient_scope``: `NotAccessible`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import re
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from typing import Any
from urllib.parse import quote, urljoin

import aiohttp
from yarl import URL

from .._errors import DigestMismatch, InvalidReference, ManifestTooLarge, NotAccessible, QuotaExceeded, RegistryError
from ..digest import is_digest, verify_bytes
from ..media import ACCEPT, MAX_MANIFEST_SIZE, OCI_INDEX, Descriptor, Manifest, detect_media_type
from ..reference import api_host, normalize_registry
from ..transfer import PullGate, TransferStats
from ._http import read_capped, read_some
from ._proxy import proxy_for
from .auth import Authenticator, merge_scopes, parse_www_authenticate, repository_scope
from .credentials import Credentials, resolve
from .ratelimit import RateLimit
from .retry import RETRYABLE_STATUSES, RetryPolicy, error_for, is_retryable, retry_after_hint

log = logging.getLogger(__name__)

#: Chunk size for chunked uploads (each PATCH), unless the registry asks for more.
DEFAULT_UPLOAD_CHUNK = 8 * 1024 * 1024
#: Blob downloads are passed on in chunks of at most this size.
READ_CHUNK = 1024 * 1024
_MAX_REDIRECTS = 10
#: After an abuse 429 (a 429 that is not the pull quota): the pace an unpaced client takes, and the slowest
#: pace halving can bring a client to (requests per second).
THROTTLED_RATE = 10.0
MIN_RATE = 1.0
#: The 429s one request may retry on top of its attempts (`RetryPolicy.throttle_retries`, by default).
MAX_THROTTLES = RetryPolicy.throttle_retries
#: A paced client may send this many seconds' worth of requests at once; an abuse-throttled one speeds
#: up again (doubling) after this many seconds without another 429.
BURST_SECONDS = 2.0
RECOVER_AFTER = 30.0
#: Bounds on a tag list: pages followed through ``Link``, seconds spent, bytes per page.
TAG_LIST_MAX_PAGES = 1000
TAG_LIST_MAX_SECONDS = 300.0
MAX_TAG_PAGE_SIZE = 16 * 1024 * 1024
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
#: Times one blob download is resumed with ``Range`` after the connection dropped.
BLOB_RESUMES = 3
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-")
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
#: Fresh redirects asked of the registry for one blob request when its CDN refuses (401/403: the signed URL
#: expired) or fails (5xx); the statuses a CDN request is still retried on as it is.
CDN_REFRESHES = 3
_CDN_RETRY_STATUSES = frozenset({408, 429})
_LINK_RE = re.compile(r"<([^>]*)>\s*((?:;\s*[^;,]*)*)")
#: How long manifest GETs stay stopped after a quota 429 that gives neither ``Retry-After`` nor a window
#: (Docker Hub's documented window); a free HEAD showing pulls left lifts the stop sooner.
QUOTA_STOP = 21600.0
_CONNECTION_ERRORS = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError)


class _StallWatch:
    """aiohttp's ``sock_read`` timeout for a blob body, without its cost.

    aiohttp re-arms a timer for every chunk it receives (a `TimerHandle`, a heap push and a cancel): in a
    cold sync that was a tenth of the client's own CPU. This watch looks four times per *timeout*: when the
    reader has been waiting for the peer all along and no byte came for *timeout* seconds, it closes the
    response; the pending read fails and the download resumes with ``Range`` like any dropped one. Time
    the reader spends not reading (the upload it feeds is slow) does not count, as in aiohttp.
    """

    def __init__(self, timeout: float | None, what: str) -> None:
        self.timeout = timeout  # None: no timeout (as aiohttp's sock_read=None)
        self.what = what
        self.received = 0  # bytes read so far (set by the reader)
        self.waiting = False  # the reader is waiting for the peer (set by the reader)
        self._resp: aiohttp.ClientResponse | None = None
        self._period = timeout / 4 if timeout else 0.0
        self._seen = -1
        self._idle = 0.0
        self._handle: asyncio.TimerHandle | None = None

    def watch(self, resp: aiohttp.ClientResponse) -> None:
        """Watch *resp*'s body (the first response, or a resumed one) instead of aiohttp's timer."""
        if not self.timeout:
            return
        self._resp = resp
        conn = resp.connection
        proto = conn.protocol if conn is not None else None
        if proto is not None:
            proto.read_timeout = None  # from the next chunk on, aiohttp arms no timer
        if self._handle is None:
            self._handle = asyncio.get_running_loop().call_later(self._period, self._tick)

    def _tick(self) -> None:
        self._idle = self._idle + self._period if self.waiting and self.received == self._seen else 0.0
        self._seen = self.received
        if self.timeout and self._idle >= self.timeout and self._resp is not None:
            log.info("%s: nothing received for %.0fs; closing the connection to resume", self.what, self._idle)
            self._idle = 0.0
            self._resp.close()
        self._handle = asyncio.get_running_loop().call_later(self._period, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


def _range_start(value: str | None) -> int | None:
    """The first byte of ``Content-Range: bytes START-END/TOTAL``."""
    m = _CONTENT_RANGE.match(value or "")
    return int(m.group(1)) if m else None


def is_loopback(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ::1, with or without a port."""
    h = host
    if h.startswith("["):
        h = h[1 : h.find("]")]
    elif h.count(":") == 1:
        h = h.split(":", 1)[0]
    if h.lower() == "localhost" or h.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def next_link(values: Iterable[str]) -> str | None:
    """The target of ``Link: <…>; rel="next"`` among *values*, or None."""
    for value in values:
        for m in _LINK_RE.finditer(value):
            params = m.group(2)
            for p in params.split(";"):
                k, _, v = p.strip().partition("=")
                if k.strip().lower() == "rel" and "next" in v.strip().strip('"').lower().split():
                    return m.group(1)
    return None


def with_query(location: str, **params: str) -> str:
    """Append query parameters to an upload *location* unchanged (keeps ``_state`` and friends)."""
    extra = "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items())
    if not extra:
        return location
    base, hash_, frag = location.partition("#")
    sep = "&" if "?" in base else "?"
    if base.endswith(("?", "&")):
        sep = ""
    return base + sep + extra + hash_ + frag


def _ssl_context(
    registry: str,
    ca_file: str | os.PathLike[str] | None,
    cert_file: str | os.PathLike[str] | None,
    key_file: str | os.PathLike[str] | None,
) -> ssl.SSLContext | bool:
    """A verifying context with *ca_file* trusted and the client certificate loaded; True if neither is set."""
    if not ca_file and not cert_file:
        return True
    ctx = ssl.create_default_context()
    if ca_file:
        try:
            ctx.load_verify_locations(cafile=os.fspath(ca_file))
        except (OSError, ssl.SSLError) as e:
            raise RegistryError(
                f"{registry}: cannot load CA file {os.fspath(ca_file)}: {e}", registry=registry
            ) from None
    if cert_file:
        try:
            ctx.load_cert_chain(os.fspath(cert_file), os.fspath(key_file) if key_file else None)
        except (OSError, ssl.SSLError) as e:
            raise RegistryError(
                f"{registry}: cannot load client certificate {os.fspath(cert_file)}"
                f"{f' with key {os.fspath(key_file)}' if key_file else ''}: {e}",
                registry=registry,
            ) from None
    elif key_file:
        raise RegistryError(f"{registry}: a client key file needs a client certificate (cert_file)", registry=registry)
    return ctx


def _safe_url(url: str) -> str:
    """*url* without its query: a blob CDN's signed URL carries its signature there, an upload its state."""
    return str(URL(url, encoded=True).with_query(None).with_fragment(None))


def _media_type(headers: Mapping[str, str]) -> str:
    return (headers.get("Content-Type") or "").split(";", 1)[0].strip()


class RegistryClient:
    """The registry API of one host. Create one per registry and share it; call `close` when done.

    *host* may be a registry name (``docker.io``) or an API host; Docker Hub is reached at
    ``registry-1.docker.io``. Plain HTTP is used for loopback hosts unless a CA or client certificate
    is given; *insecure* True means "try HTTPS without verification, then HTTP" (docker's
    insecure-registry rule), False forces verified HTTPS. *ca_file*, *cert_file* and *key_file* apply
    to every request to this registry, token requests to its auth server included.
    Credentials not given are looked up lazily (`hubmirror.registry.credentials.resolve`) unless
    *anonymous* is set. *pull_gate* is asked before every manifest GET sent, retries included (see
    `hubmirror.store.PullGate`); after a quota 429 no manifest GET is sent to this registry for a while
    (`QuotaExceeded` at once; HEADs still go out). *rate* paces requests to the registry (Docker Hub's
    abuse limit applies to every request, HEADs too); a 429 that is not the pull quota pauses every
    request for its ``Retry-After`` (or a backoff) and slows the pace.
    """

    def __init__(
        self,
        host: str,
        *,
        credentials: Credentials | None = None,
        authfile: str | os.PathLike[str] | None = None,
        anonymous: bool = False,
        insecure: bool | None = None,
        ca_file: str | os.PathLike[str] | None = None,
        cert_file: str | os.PathLike[str] | None = None,
        key_file: str | os.PathLike[str] | None = None,
        retry: RetryPolicy | None = None,
        stats: TransferStats | None = None,
        session: aiohttp.ClientSession | None = None,
        upload_chunk_size: int = DEFAULT_UPLOAD_CHUNK,
        timeout: aiohttp.ClientTimeout | None = None,
        connections: int = 16,
        pull_gate: PullGate | None = None,
        rate: float | None = None,
    ) -> None:
        self.registry = normalize_registry(host)
        self.host = api_host(host)
        self.insecure = insecure
        self.retry = retry or RetryPolicy()
        self.stats = stats or TransferStats()
        self.upload_chunk_size = upload_chunk_size
        self._credentials = credentials
        self._authfile = authfile
        self._lookup_credentials = credentials is None and not anonymous
        self._auth = Authenticator(self.registry, credentials)
        self._session = session
        self._own_session = session is None
        self._timeout = timeout or aiohttp.ClientTimeout(total=None, connect=30, sock_connect=30, sock_read=300)
        self._connections = connections
        self._ssl_verified = _ssl_context(self.registry, ca_file, cert_file, key_file)
        self._tls_configured = bool(ca_file or cert_file)
        self._ssl: ssl.SSLContext | bool = self._ssl_verified
        # The token server is reached with this registry's TLS settings too, and retried by its policy.
        self._auth.ssl = False if insecure is True else self._ssl_verified
        self._auth.retry = self.retry
        self._auth.on_retry = self._token_retry
        self._base: str | None = None
        self._base_proxy: str | None = None
        self._ready_lock = asyncio.Lock()
        self._unreachable: RegistryError | None = None
        self._ratelimit: RateLimit | None = None
        #: Asked before every manifest GET this client sends (the Docker Hub pull budget), if set.
        self.pull_gate = pull_gate
        #: Requests per second to this registry at most (None: not paced); halved on an abuse 429.
        self.rate = rate if rate else None
        self._rate = self.rate or THROTTLED_RATE  # what the pace recovers to after an abuse 429
        self._tokens = max(1.0, (self.rate or 0.0) * BURST_SECONDS)
        self._tokens_at = 0.0
        self._paused_until = 0.0
        self._throttled_at = 0.0  # when the pace last changed (halved, or doubled back)
        self._halved_at = -BURST_SECONDS
        #: After a quota 429: no manifest GET goes out until this loop time (or a later answer shows pulls
        #: left again); the 429's error, and when it came.
        self._quota_until = 0.0
        self._quota_error: QuotaExceeded | None = None
        self._quota_at = 0.0

    def __repr__(self) -> str:
        return f"RegistryClient(host={self.host!r}, base={self._base!r}, auth={self._auth!r})"

    # -- lifecycle ---------------------------------------------------------------------------------

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session (if this client created it)."""
        if self._session is not None and self._own_session and not self._session.closed:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._connections, limit_per_host=self._connections)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
            self._own_session = True
        return self._session

    @property
    def ratelimit(self) -> RateLimit | None:
        """The pull quota reported by the latest manifest response that carried ``ratelimit-*`` headers."""
        return self._ratelimit

    @property
    def base_url(self) -> str | None:
        """``http(s)://host`` once the first request has chosen the scheme."""
        return self._base

    @property
    def auth_scheme(self) -> str | None:
        """``bearer``, ``basic`` or None (no auth), from the registry's challenge."""
        return self._auth.scheme

    @property
    def token_fetches(self) -> int:
        """How many tokens this client fetched from the token server."""
        return self._auth.token_fetches

    @property
    def has_credentials(self) -> bool:
        """True if requests are sent with credentials (given, or found by the lookup once connected)."""
        return self._credentials is not None

    def reset_auth(self, *, anonymous: bool = False) -> None:
        """Forget every cached token (a registry that answers a stale bearer with 400 instead of 401, as ECR
        Public does); with *anonymous*, forget the credentials too: later requests are anonymous (an
        expired ``docker login public.ecr.aws`` is refused with 403 where anonymous pulls work)."""
        if anonymous:
            self._credentials = None
            self._lookup_credentials = False
        auth = Authenticator(self.registry, self._credentials)
        auth.challenge, auth.ssl, auth.token_fetches = self._auth.challenge, self._auth.ssl, self._auth.token_fetches
        self._auth = auth

    # -- connection setup --------------------------------------------------------------------------

    def _candidates(self) -> list[tuple[str, ssl.SSLContext | bool]]:
        if self.insecure is True:
            return [("https", False), ("http", False)]
        if self.insecure is None and is_loopback(self.host) and not self._tls_configured:
            return [("http", False)]
        return [("https", self._ssl_verified)]

    async def _ensure_ready(self) -> str:
        """Pick the scheme and learn the auth challenge from ``GET /v2/`` (once)."""
        if self._base is not None:
            return self._base
        if self._unreachable is not None:
            raise self._unreachable  # tried with every retry already: fail fast, not once per request
        async with self._ready_lock:
            if self._base is not None:
                return self._base
            if self._unreachable is not None:
                raise self._unreachable
            try:
                return await self._connect()
            except RegistryError as e:
                self._unreachable = e
                raise

    async def _connect(self) -> str:
        """Read credentials, then try each scheme with retries until ``GET /v2/`` answers."""
        if self._lookup_credentials:
            self._credentials = await asyncio.to_thread(resolve, self.registry, authfile=self._authfile)
            self._auth.credentials = self._credentials
            self._lookup_credentials = False
        last: BaseException | None = None
        for attempt in range(1, self.retry.attempts + 1):
            for scheme, ssl_opt in self._candidates():
                url = f"{scheme}://{self.host}/v2/"
                try:
                    async with self.session.get(url, ssl=ssl_opt, allow_redirects=False, proxy=proxy_for(url)) as resp:
                        await read_some(resp)
                        status, headers = resp.status, resp.headers
                except (aiohttp.ClientSSLError, aiohttp.ClientConnectorCertificateError) as e:
                    last = e
                    if len(self._candidates()) == 1:
                        raise RegistryError(
                            f"{self.host}: TLS handshake failed ({type(e).__name__}: {e}); pass a CA file "
                            "or mark the registry insecure",
                            registry=self.registry,
                        ) from None
                    continue
                except _CONNECTION_ERRORS as e:
                    last = e
                    continue
                if status in RETRYABLE_STATUSES and attempt < self.retry.attempts:
                    if status == 429:  # not a manifest GET: never the pull quota, the abuse limit
                        self.stats.abuse_backoffs += 1
                    last = RegistryError(f"{self.host}: GET /v2/: HTTP {status}", status=status)
                    break
                if status == 401:
                    self._auth.set_challenges(parse_www_authenticate(headers.get("WWW-Authenticate", "")))
                elif status != 200:
                    raise RegistryError(
                        f"{self.host}: GET /v2/ answered HTTP {status}; not an OCI distribution registry?",
                        status=status,
                        registry=self.registry,
                    )
                self._ssl = ssl_opt
                self._base = f"{scheme}://{self.host}"
                self._base_proxy = proxy_for(url)  # every request to this origin: looked up once
                return self._base
            if attempt < self.retry.attempts:
                self.stats.retries += 1
                await asyncio.sleep(self.retry.delay(attempt))
        detail = f"{type(last).__name__}: {last}" if last else "no answer"
        raise RegistryError(f"{self.host}: registry unreachable ({detail})", registry=self.registry)

    # -- the request loop --------------------------------------------------------------------------

    def _same_origin(self, url: str) -> bool:
        return self._base is not None and (url == self._base or url.startswith(self._base + "/"))

    async def _send(
        self,
        method: str,
        url: str,
        *,
        scopes: Iterable[str],
        what: str,
        repository: str | None = None,
        headers: Mapping[str, str] | None = None,
        data: Any = None,
        replayable: bool = True,
        pull: bool = False,
        retry_statuses: frozenset[int] = RETRYABLE_STATUSES,
    ) -> aiohttp.ClientResponse:
        """Send one request with auth, re-challenging once on 401 and retrying transient failures.

        Returns the response (caller releases it). Redirects are not followed here.
        *replayable* False (streamed bodies) disables every resend. *pull* marks a manifest GET (a Docker
        Hub pull): each one put on the wire, a retry's too, is refused at once while this registry's pull
        quota is known to be spent (`QuotaExceeded`) and charged to the `pull_gate`. Answers with a status
        outside *retry_statuses* are returned, not retried.
        """
        await self._ensure_ready()
        scope_set = merge_scopes(scopes)
        attempt = 0
        throttles = 0
        reauthed = False
        while True:
            attempt += 1
            h = dict(headers or {})
            same = self._same_origin(url)
            if pull:
                self._check_quota(what, repository)
                if self.pull_gate is not None:
                    await self.pull_gate.acquire(1)  # each GET sent is a pull, a retry's too
            if same:
                await self._pace()
                authz = await self._auth.header(self.session, scope_set)
                if authz:
                    h["Authorization"] = authz
            try:
                resp = await self.session.request(
                    method,
                    URL(url, encoded=True),
                    headers=h,
                    data=data,
                    allow_redirects=False,
                    ssl=self._ssl if same else self._ssl_verified,
                    proxy=self._base_proxy if same else proxy_for(url),
                )
            except _CONNECTION_ERRORS as e:
                if not replayable or attempt >= self.retry.attempts:
                    raise RegistryError(
                        f"{self.host}: {what}: {type(e).__name__}: {e}", registry=self.registry, repository=repository
                    ) from None
                self.stats.retries += 1
                delay = self.retry.delay(attempt)
                log.info("%s %s: %s; retrying in %.2fs", method, _safe_url(url), type(e).__name__, delay)
                await asyncio.sleep(delay)
                continue
            if resp.status == 401 and same and replayable and not reauthed:
                reauthed = True
                attempt -= 1
                www = resp.headers.get("WWW-Authenticate")
                resp.release()
                if www:
                    self._auth.set_challenges(parse_www_authenticate(www))
                self._auth.invalidate(scope_set)
                log.debug("%s %s: 401, re-authenticating", method, _safe_url(url))
                continue
            throttle = resp.status == 429 and throttles < self.retry.throttle_retries  # abuse 429s: own count
            if resp.status in retry_statuses and replayable and (attempt < self.retry.attempts or throttle):
                body = await read_some(resp)
                if is_retryable(resp.status, body, resp.headers, pull=pull):
                    delay = self.retry.delay(attempt, retry_after_hint(resp.headers, body))
                    resp.release()
                    self.stats.retries += 1
                    if resp.status == 429:
                        if throttle:
                            attempt -= 1
                        throttles += 1
                        self._throttled(delay)
                    log.info("%s %s: HTTP %d; retrying in %.2fs", method, _safe_url(url), resp.status, delay)
                    await asyncio.sleep(delay)
                    continue
            return resp

    async def _pace(self) -> None:
        """Wait for this request's turn: a token bucket of `rate` requests a second (bursts of up to
        `BURST_SECONDS` of them), and nothing while backing off from an abuse 429."""
        now = asyncio.get_running_loop().time()
        start = max(now, self._paused_until)
        if self.rate:
            if self.rate < self._rate and now - self._throttled_at > RECOVER_AFTER:
                self.rate = min(self._rate, self.rate * 2)  # no 429 for a while: speed up again
                self._throttled_at = now
            burst = max(1.0, self.rate * BURST_SECONDS)
            self._tokens = min(burst, self._tokens + (now - self._tokens_at) * self.rate)
            self._tokens_at = now
            self._tokens -= 1  # below 0: queued behind the requests already waiting for their turn
            if self._tokens < 0:
                start = max(start, now - self._tokens / self.rate)
        if start > now:
            await asyncio.sleep(start - now)

    def _throttled(self, delay: float) -> None:
        """An abuse-limit 429: every request to this registry waits *delay*; the pace halves (an unpaced
        client starts pacing), once per back-off and at most once per `BURST_SECONDS`, and recovers after
        `RECOVER_AFTER` seconds without one."""
        self.stats.abuse_backoffs += 1
        now = asyncio.get_running_loop().time()
        # Requests already on the wire when the limit struck get their 429s too, and Docker Hub's own hint
        # may be under a millisecond: one halving per `BURST_SECONDS`, not one per 429.
        if now >= self._paused_until and now - self._halved_at >= BURST_SECONDS:
            self.rate = max(self.rate / 2 if self.rate else THROTTLED_RATE, MIN_RATE)
            self._tokens = min(self._tokens, 0.0)
            self._throttled_at = self._halved_at = now
        self._paused_until = max(self._paused_until, now + delay)
        log.warning("%s: too many requests (HTTP 429, not the pull quota); backing off %.1fs", self.host, delay)

    def _token_retry(self, status: int, delay: float) -> None:
        """The token server answered *status* (0: not at all) and is asked again after *delay*: a retry,
        and a 429 the abuse limit's (counted, and every request to this registry waits and slows)."""
        self.stats.retries += 1
        if status == 429:
            self._throttled(delay)

    async def _fail(self, resp: aiohttp.ClientResponse, what: str, repository: str | None) -> RegistryError:
        """The error for *resp* (read and released)."""
        try:
            body = await read_some(resp)
        except _CONNECTION_ERRORS:
            body = b""
        resp.release()
        if resp.status == 401 and repository and self._insufficient_scope(resp):
            return NotAccessible(
                f"{self.registry}/{repository}: not found, or not accessible with these credentials",
                status=401,
                code="UNAUTHORIZED",
                registry=self.registry,
                repository=repository,
            )
        if resp.status in (401, 403):
            return self._auth.rejected(resp.status, what, repository=repository)
        return error_for(resp.status, body, resp.headers, what=what, registry=self.host, repository=repository)

    def _insufficient_scope(self, resp: aiohttp.ClientResponse) -> bool:
        """A pull (GET or HEAD) the registry itself answered 401 ``error="insufficient_scope"`` after a fresh
        token (`_send` re-authenticates once first): the token server granted no access to the repository,
        as Docker Hub's does for one that does not exist (distribution #4354) — not a login failure."""
        if resp.method not in ("GET", "HEAD") or not self._same_origin(str(resp.url)):
            return False
        for challenge in parse_www_authenticate(resp.headers.get("WWW-Authenticate", "")):
            if challenge.scheme == "bearer" and challenge.params.get("error") == "insufficient_scope":
                return True
        return False

    def _url(self, repo: str, *parts: str) -> str:
        assert self._base is not None
        return f"{self._base}/v2/{repo}/" + "/".join(parts)

    def _check_digest(self, repo: str, digest: str) -> None:
        if not is_digest(digest):
            raise InvalidReference(f"{self.host}/{repo}: invalid digest {digest[:100]!r}")

    def _ref_url(self, repo: str, kind: str, ref: str) -> str:
        """The URL of manifest or blob *ref*; a ref that is neither a digest nor a tag never reaches a URL."""
        if not is_digest(ref) and (kind == "blobs" or not _TAG_RE.match(ref)):
            what = "digest" if kind == "blobs" or ":" in ref else "tag"
            raise InvalidReference(f"{self.host}/{repo}: invalid {what} {ref[:100]!r}")
        return self._url(repo, kind, ref)

    def _note_ratelimit(self, headers: Mapping[str, str], sent_at: float | None = None) -> None:
        """Keep the quota the answer reports; one to a request sent after a quota 429 showing pulls left
        again lifts the stop on GETs (`_check_quota`)."""
        rl = RateLimit.from_headers(headers)
        if rl is not None:
            self._ratelimit = rl
            if rl.remaining > 0 and self._quota_error is not None and sent_at is not None and sent_at > self._quota_at:
                log.info("%s: the pull quota has %d pulls left again; manifest GETs resume", self.host, rl.remaining)
                self._quota_error = None
                self._quota_until = 0.0

    def _quota_exceeded(self, err: QuotaExceeded, headers: Mapping[str, str]) -> None:
        """A quota 429 came (from any registry: Docker Hub, or a pull-through cache in front of it): no
        further manifest GET to this registry is sent until its ``Retry-After`` passes, else the quota
        window its headers announce, else `QUOTA_STOP` seconds; an answer showing pulls left (a free HEAD)
        lifts that sooner."""
        now = asyncio.get_running_loop().time()
        rl = RateLimit.from_headers(headers)
        wait = err.retry_after if err.retry_after is not None else (rl.window if rl and rl.window else QUOTA_STOP)
        self._quota_error = err
        self._quota_at = now
        self._quota_until = max(self._quota_until, now + wait)

    def _check_quota(self, what: str, repository: str | None) -> None:
        """Raise `QuotaExceeded` instead of sending a manifest GET while the pull quota is known spent."""
        err = self._quota_error
        if err is None:
            return
        now = asyncio.get_running_loop().time()
        if now >= self._quota_until:
            self._quota_error = None
            return
        raise QuotaExceeded(
            f"{self.host}: {what}: not sent: the pull quota is spent (HTTP 429 {now - self._quota_at:.0f}s ago); "
            f"no manifest GET to {self.host} for {self._quota_until - now:.0f}s more",
            retry_after=self._quota_until - now,
            status=429,
            code=err.code,
            registry=self.host,
            repository=repository,
        )

    @staticmethod
    def _pull(repo: str) -> tuple[str, ...]:
        return (repository_scope(repo, ("pull",)),)

    @staticmethod
    def _push(repo: str) -> tuple[str, ...]:
        return (repository_scope(repo, ("pull", "push")),)

    # -- login -------------------------------------------------------------------------------------

    async def check_login(self) -> None:
        """Verify the credentials: fetch a scope-less token (Bearer) or call ``/v2/`` (Basic).

        Raises `AuthError` if the registry refuses them.
        """
        await self._ensure_ready()
        if self._auth.scheme is None:
            return
        if self._auth.scheme == "bearer":
            await self._auth.header(self.session, [])
            return
        resp = await self._send("GET", f"{self._base}/v2/", scopes=[], what="login", replayable=False)
        if resp.status != 200:
            raise await self._fail(resp, "login", None)  # the user is named by the error itself (never on pages)
        resp.release()

    # -- manifests ---------------------------------------------------------------------------------

    async def _manifest_request(self, method: str, repo: str, ref: str, what: str) -> aiohttp.ClientResponse:
        """HEAD or GET a manifest with every modern type in Accept; note the quota headers it carries.

        A GET is a pull: see `_send`. A quota 429 stops every further GET to this registry for a while."""
        await self._ensure_ready()
        sent_at = asyncio.get_running_loop().time()
        resp = await self._send(
            method,
            self._ref_url(repo, "manifests", ref),
            scopes=self._pull(repo),
            what=what,
            repository=repo,
            headers={"Accept": ACCEPT},
            pull=method == "GET",
        )
        self._note_ratelimit(resp.headers, sent_at)
        return resp

    async def head_manifest(self, repo: str, ref: str) -> Descriptor | None:
        """Digest, media type and size of *ref*; None if absent. Falls back to GET without a digest header."""
        what = f"HEAD manifest {repo}:{ref}"
        resp = await self._manifest_request("HEAD", repo, ref, what)
        if resp.status in (200, 404):  # every HEAD answered counts: "not found" was asked too
            self.stats.manifest_heads += 1
        if resp.status == 404:
            resp.release()
            return None
        if resp.status != 200:
            raise await self._fail(resp, what, repo)
        resp.release()
        digest = resp.headers.get("Docker-Content-Digest")
        if not digest or not is_digest(digest):
            log.debug("%s: no Docker-Content-Digest, falling back to GET", what)
            return (await self.get_manifest(repo, ref)).descriptor()
        if is_digest(ref) and digest != ref:
            raise DigestMismatch(f"{self.host}/{repo}@{ref}: registry reports digest {digest}")
        mt = _media_type(resp.headers)
        length = resp.headers.get("Content-Length")
        size = int(length) if length and length.isdigit() else 0
        return Descriptor(mt, digest, size)

    async def get_manifest(self, repo: str, ref: str) -> Manifest:
        """The exact bytes of *ref*, verified against the requested digest or ``Docker-Content-Digest``."""
        what = f"GET manifest {repo}:{ref}" if not is_digest(ref) else f"GET manifest {repo}@{ref}"
        # Each GET sent asks the pull gate first (in `_send`), wherever it comes from (a HEAD's fallback too).
        resp = await self._manifest_request("GET", repo, ref, what)
        if resp.status != 200:
            err = await self._fail(resp, what, repo)
            if isinstance(err, QuotaExceeded):
                self._quota_exceeded(err, resp.headers)
            raise err
        try:
            length = resp.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > MAX_MANIFEST_SIZE:
                raise ManifestTooLarge(
                    f"{self.host}/{repo}:{ref}: manifest of {int(length)} bytes exceeds the "
                    f"{MAX_MANIFEST_SIZE} byte cap",
                    registry=self.host,
                    repository=repo,
                )
            buf = bytearray()
            async for chunk in resp.content.iter_chunked(65536):
                buf += chunk
                if len(buf) > MAX_MANIFEST_SIZE:
                    raise ManifestTooLarge(
                        f"{self.host}/{repo}:{ref}: manifest exceeds the {MAX_MANIFEST_SIZE} byte cap",
                        registry=self.host,
                        repository=repo,
                    )
        except _CONNECTION_ERRORS as e:
            raise RegistryError(f"{self.host}: {what}: {type(e).__name__}", registry=self.host) from None
        finally:
            resp.release()
        self.stats.manifest_gets += 1
        data = bytes(buf)
        header_digest = resp.headers.get("Docker-Content-Digest")
        if is_digest(ref):
            verify_bytes(data, ref, f"{self.host}/{repo}@{ref}")
        elif header_digest and is_digest(header_digest):
            verify_bytes(data, header_digest, f"{self.host}/{repo}:{ref} (Docker-Content-Digest)")
        return Manifest(data, detect_media_type(data, _media_type(resp.headers)))

    async def put_manifest(self, repo: str, ref: str, manifest: Manifest) -> str:
        """PUT *manifest*'s exact bytes under *ref* with Content-Type = its media type; returns the digest."""
        await self._ensure_ready()
        what = f"PUT manifest {repo}:{ref}"
        resp = await self._send(
            "PUT",
            self._ref_url(repo, "manifests", ref),
            scopes=self._push(repo),
            what=what,
            repository=repo,
            headers={"Content-Type": manifest.media_type},
            data=manifest.data,
        )
        if resp.status not in (200, 201, 202):
            raise await self._fail(resp, what, repo)
        resp.release()
        self.stats.manifest_puts += 1
        digest = resp.headers.get("Docker-Content-Digest")
        if digest and is_digest(digest) and digest.startswith("sha256:") and digest != manifest.digest:
            raise DigestMismatch(f"{self.host}/{repo}:{ref}: registry stored {digest}, expected {manifest.digest}")
        return manifest.digest

    async def delete_manifest(self, repo: str, ref: str) -> None:
        """DELETE a manifest by digest (or tag, where the registry allows it)."""
        await self._ensure_ready()
        what = f"DELETE manifest {repo}:{ref}"
        resp = await self._send(
            "DELETE",
            self._ref_url(repo, "manifests", ref),
            scopes=[repository_scope(repo, ("delete",))],
            what=what,
            repository=repo,
        )
        if resp.status not in (200, 202, 204):
            raise await self._fail(resp, what, repo)
        resp.release()

    # -- blobs -------------------------------------------------------------------------------------

    async def _follow(
        self, method: str, url: str, repo: str, what: str, headers: Mapping[str, str] | None = None
    ) -> aiohttp.ClientResponse:
        """Send *method* to *url*, following redirects; ``Authorization`` only goes to the registry itself.

        A redirect elsewhere is a blob CDN's signed URL (reference §C.6): a 401/403 there means the URL
        expired or was refused, not that the login is wrong, and a 5xx is the CDN's; either way the registry
        is asked again for a fresh redirect (with the same *headers*: a resume keeps its ``Range``), up to
        `CDN_REFRESHES` times, 5xx backing off.
        """
        refreshes = 0
        while True:
            resp, cdn = await self._redirected(method, url, repo, what, headers)
            if cdn is None or not (resp.status in (401, 403) or resp.status >= 500):
                return resp
            status = resp.status
            resp.release()
            if refreshes >= CDN_REFRESHES:
                raise RegistryError(
                    f"{self.host}: {what}: the blob CDN {cdn} answered HTTP {status} to {refreshes + 1} "
                    f"fresh redirects ({'signed URL refused or expired' if status < 500 else 'server error'})",
                    status=status,
                    registry=self.registry,
                    repository=repo,
                )
            refreshes += 1
            self.stats.retries += 1
            delay = self.retry.delay(refreshes, retry_after_hint(resp.headers)) if status >= 500 else 0.0
            log.info(
                "%s: the blob CDN %s answered HTTP %d; asking %s for a fresh redirect%s",
                what,
                cdn,
                status,
                self.host,
                f" in {delay:.2f}s" if delay else "",
            )
            if delay:
                await asyncio.sleep(delay)

    async def _redirected(
        self, method: str, url: str, repo: str, what: str, headers: Mapping[str, str] | None
    ) -> tuple[aiohttp.ClientResponse, str | None]:
        """The answer to *method* *url* after its redirects, and the host it came from when that is not the
        registry (a CDN; None: the registry answered itself). A CDN's 401/403/5xx is returned unretried."""
        resp = await self._send(method, url, scopes=self._pull(repo), what=what, repository=repo, headers=headers)
        hops = 0
        while resp.status in _REDIRECTS:
            location = resp.headers.get("Location")
            resp.release()
            hops += 1
            if not location or hops > _MAX_REDIRECTS:
                raise RegistryError(f"{self.host}: {what}: bad or endless redirect", registry=self.host)
            url = urljoin(str(resp.url), location)
            log.debug("%s: redirected to %s", what, _safe_url(url))
            same = self._same_origin(url)
            resp = await self._send(
                method,
                url,
                scopes=self._pull(repo),
                what=what,
                repository=repo,
                headers=headers,
                retry_statuses=RETRYABLE_STATUSES if same else _CDN_RETRY_STATUSES,
            )
        cdn = None if self._same_origin(str(resp.url)) else URL(str(resp.url), encoded=True).host
        return resp, cdn

    async def head_blob(self, repo: str, digest: str) -> int | None:
        """The size of blob *digest* in *repo* (-1 if the registry does not say), or None if absent."""
        await self._ensure_ready()
        what = f"HEAD blob {repo}@{digest}"
        resp = await self._follow("HEAD", self._ref_url(repo, "blobs", digest), repo, what)
        if resp.status == 404:
            resp.release()
            return None
        if resp.status != 200:
            raise await self._fail(resp, what, repo)
        resp.release()
        self.stats.blob_heads += 1
        length = resp.headers.get("Content-Length")
        return int(length) if length and length.isdigit() else -1

    @contextlib.asynccontextmanager
    async def open_blob(
        self, repo: str, digest: str, *, offset: int = 0, resumes: int | None = None, stall: float | None = None
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """Stream blob *digest*, following redirects (no ``Authorization`` to other hosts).

        Yields an async iterator of chunks of up to `READ_CHUNK` (1 MiB). A download cut
        off midway is resumed with a ``Range`` request from where it stopped (up to *resumes* times,
        default `BLOB_RESUMES`; 0: the interruption is raised, for the caller to read the rest elsewhere).
        With *offset*, only the bytes from there on are asked for (``Range``; a server that cannot is an
        error). *stall*: seconds without a byte before the download counts as interrupted (default: the
        client's ``sock_read``). Not verified here: the caller checks size and digest.
        """
        await self._ensure_ready()
        what = f"GET blob {repo}@{digest}"
        url = self._ref_url(repo, "blobs", digest)
        headers = {"Range": f"bytes={offset}-"} if offset else None
        resp = await self._follow("GET", url, repo, what, headers=headers)
        if resp.status != (206 if offset else 200):
            if offset and resp.status == 200:
                resp.release()
                raise RegistryError(
                    f"{self.host}: {what}: cannot read from byte {offset} (no Range support)",
                    registry=self.host,
                    repository=repo,
                )
            raise await self._fail(resp, what, repo)
        if offset and _range_start(resp.headers.get("Content-Range")) != offset:
            resp.release()
            raise RegistryError(
                f"{self.host}: {what}: asked for bytes from {offset}, answered Content-Range "
                f"{resp.headers.get('Content-Range')!r}",
                registry=self.host,
                repository=repo,
            )
        self.stats.blob_gets += 1
        current = [resp]
        watch = _StallWatch(stall if stall is not None else self._timeout.sock_read, what)
        try:
            yield self._resuming(current, url, repo, what, watch, offset, BLOB_RESUMES if resumes is None else resumes)
        finally:
            watch.stop()
            current[0].release()

    async def _resuming(
        self,
        current: list[aiohttp.ClientResponse],
        url: str,
        repo: str,
        what: str,
        watch: _StallWatch,
        offset: int = 0,
        max_resumes: int = BLOB_RESUMES,
    ) -> AsyncIterator[bytes]:
        """The body of ``current[0]`` (from byte *offset*) in chunks of up to `READ_CHUNK` bytes; when the
        connection drops (or *watch* finds it stalled), GET the rest with ``Range`` (*max_resumes* times).

        A chunk is what aiohttp has buffered when asked, passed on as it is: no re-chunking, no copies
        (measured: re-chunking into 1 MiB pieces or a larger read buffer cost more CPU than they saved).
        """
        resumes = 0
        stats = self.stats
        while True:
            content = current[0].content
            watch.watch(current[0])
            try:
                while True:
                    watch.waiting = True
                    piece = await content.read(READ_CHUNK)
                    watch.waiting = False
                    if not piece:
                        return
                    offset += len(piece)
                    watch.received = offset
                    stats.blob_bytes_read += len(piece)
                    yield piece
            except _CONNECTION_ERRORS as e:
                if resumes >= max_resumes:
                    raise RegistryError(
                        f"{self.host}: {what}: download interrupted at byte {offset} ({resumes} resumes): "
                        f"{type(e).__name__}",
                        registry=self.host,
                        repository=repo,
                    ) from None
            resumes += 1
            self.stats.retries += 1
            log.info("%s: interrupted at byte %d; resuming with Range", what, offset)
            current[0].release()
            resp = await self._follow("GET", url, repo, what, headers={"Range": f"bytes={offset}-"})
            current[0] = resp
            start = _range_start(resp.headers.get("Content-Range"))
            if resp.status != 206 or start != offset:
                resp.release()
                raise RegistryError(
                    f"{self.host}: {what}: download interrupted at byte {offset}; the server cannot resume "
                    f"(HTTP {resp.status})",
                    registry=self.host,
                    repository=repo,
                )

    def _location(self, resp: aiohttp.ClientResponse, what: str) -> str:
        loc = resp.headers.get("Location")
        if not loc:
            raise RegistryError(f"{self.host}: {what}: HTTP {resp.status} without a Location header")
        return urljoin(str(resp.url), loc)

    async def _abort_upload(self, location: str, repo: str) -> None:
        """Best-effort DELETE of an upload session."""
        try:
            resp = await self._send(
                "DELETE", location, scopes=self._push(repo), what="cancel upload", repository=repo, replayable=False
            )
            resp.release()
        except Exception as e:  # the original failure matters more
            log.warning("%s: could not cancel upload session: %s", self.host, e)

    async def _start_upload(
        self, repo: str, what: str, query: str = "", extra_scopes: Iterable[str] = ()
    ) -> tuple[int, str]:
        url = self._url(repo, "blobs", "uploads") + "/" + query
        resp = await self._send(
            "POST",
            url,
            scopes=[*self._push(repo), *extra_scopes],
            what=what,
            repository=repo,
            headers={"Content-Length": "0"},
            data=b"",
        )
        if resp.status not in (201, 202):
            raise await self._fail(resp, what, repo)
        resp.release()
        return resp.status, self._location(resp, what)

    async def _counted(self, chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
        async for chunk in chunks:
            if chunk:
                self.stats.blob_bytes_written += len(chunk)
                yield chunk

    async def push_blob(self, repo: str, digest: str, chunks: AsyncIterable[bytes], size: int | None = None) -> None:
        """Upload a blob: monolithic when *size* is known, else chunked."""
        self._check_digest(repo, digest)
        if size is not None:
            await self.push_blob_monolithic(repo, digest, size, chunks)
        else:
            await self.push_blob_chunked(repo, digest, chunks)

    async def push_blob_monolithic(self, repo: str, digest: str, size: int, chunks: AsyncIterable[bytes]) -> None:
        """POST an upload, then stream the whole blob in one ``PUT <Location>&digest=…``."""
        await self._ensure_ready()
        what = f"upload blob {repo}@{digest}"
        _, location = await self._start_upload(repo, what)
        try:
            await self._close_upload(
                location,
                repo,
                digest,
                what,
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
                data=self._counted(chunks) if size else b"",
            )
        except BaseException:
            await self._abort_upload(location, repo)
            raise
        self.stats.blob_uploads += 1

    async def _close_upload(
        self, location: str, repo: str, digest: str, what: str, *, headers: Mapping[str, str], data: Any
    ) -> None:
        """The upload's closing ``PUT <Location>&digest=…`` (with the body, or the last bytes, in *data*)."""
        resp = await self._send(
            "PUT",
            with_query(location, digest=digest),
            scopes=self._push(repo),
            what=what,
            repository=repo,
            headers=headers,
            data=data,
            replayable=False,
        )
        if resp.status not in (201, 204):
            raise await self._fail(resp, what, repo)
        resp.release()

    async def push_blob_chunked(
        self, repo: str, digest: str, chunks: AsyncIterable[bytes], chunk_size: int | None = None
    ) -> None:
        """POST an upload, PATCH it chunk by chunk (always at the latest Location), then PUT the digest."""
        await self._ensure_ready()
        what = f"chunked upload blob {repo}@{digest}"
        url = self._url(repo, "blobs", "uploads") + "/"
        resp = await self._send(
            "POST", url, scopes=self._push(repo), what=what, repository=repo, headers={"Content-Length": "0"}, data=b""
        )
        if resp.status != 202:
            raise await self._fail(resp, what, repo)
        resp.release()
        location = self._location(resp, what)
        min_len = resp.headers.get("OCI-Chunk-Min-Length", "")
        size = max(chunk_size or self.upload_chunk_size, int(min_len) if min_len.isdigit() else 0)
        offset = 0
        try:
            buf = bytearray()

            async def patch(piece: bytes) -> None:
                nonlocal location, offset
                r = await self._send(
                    "PATCH",
                    location,
                    scopes=self._push(repo),
                    what=what,
                    repository=repo,
                    headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Range": f"{offset}-{offset + len(piece) - 1}",
                        "Content-Length": str(len(piece)),
                    },
                    data=piece,
                    replayable=False,
                )
                if r.status != 202:
                    raise await self._fail(r, what, repo)
                r.release()
                location = self._location(r, what)
                offset += len(piece)
                self.stats.blob_bytes_written += len(piece)

            async for chunk in chunks:
                buf += chunk
                while len(buf) >= size:
                    await patch(bytes(buf[:size]))
                    del buf[:size]
            if buf:
                await patch(bytes(buf))
            await self._close_upload(location, repo, digest, what, headers={"Content-Length": "0"}, data=b"")
        except BaseException:
            await self._abort_upload(location, repo)
            raise
        self.stats.blob_uploads += 1

    async def mount_blob(self, repo: str, digest: str, from_repo: str) -> bool:
        """Cross-repository mount; True if mounted (201). A 202 opens a session, which is DELETEd: False."""
        await self._ensure_ready()
        self._check_digest(repo, digest)
        what = f"mount blob {digest} from {from_repo} into {repo}"
        query = f"?mount={quote(digest, safe='')}&from={quote(from_repo, safe='/')}"
        status, location = await self._start_upload(repo, what, query, self._pull(from_repo))
        if status == 201:
            self.stats.blob_mounts += 1
            return True
        await self._abort_upload(location, repo)
        return False

    # -- tags --------------------------------------------------------------------------------------

    async def list_tags(self, repo: str) -> list[str]:
        """Every tag of *repo*, following ``Link: rel="next"``; empty if the repository does not exist.

        Bounded: at most `TAG_LIST_MAX_PAGES` pages of at most `MAX_TAG_PAGE_SIZE` bytes within
        `TAG_LIST_MAX_SECONDS`; a ``Link`` back to a page already read, or a page of only tags already
        listed, is a loop. Each of these is a `RegistryError` naming the registry and repository.
        """
        await self._ensure_ready()
        url: str | None = self._url(repo, "tags", "list")
        tags: list[str] = []
        known: set[str] = set()
        seen: set[str] = set()
        where = f"{self.host}/{repo}"
        what = f"list tags of {repo}"
        deadline = asyncio.get_running_loop().time() + TAG_LIST_MAX_SECONDS
        pages = 0

        def bounded(reason: str) -> RegistryError:
            return RegistryError(
                f"{where}: tag list {reason}; stopped after {pages} page(s) and {len(tags)} tags",
                registry=self.registry,
                repository=repo,
            )

        while url:
            if url in seen:
                raise bounded(f"pagination loops back to an earlier page ({URL(url).path_qs[:200]})")
            if pages >= TAG_LIST_MAX_PAGES:
                raise bounded(f"did not end within {TAG_LIST_MAX_PAGES} pages (endless Link chain?)")
            if asyncio.get_running_loop().time() > deadline:
                raise bounded(f"did not end within {TAG_LIST_MAX_SECONDS:g} s")
            seen.add(url)
            pages += 1
            resp = await self._send("GET", url, scopes=self._pull(repo), what=what, repository=repo)
            if resp.status == 404 and not tags:
                resp.release()
                return []
            if resp.status != 200:
                raise await self._fail(resp, what, repo)
            try:
                body = await read_capped(resp, MAX_TAG_PAGE_SIZE)
                if body is None:
                    raise bounded(f"page exceeds {MAX_TAG_PAGE_SIZE} bytes")
                obj = json.loads(body)
            except (ValueError, *_CONNECTION_ERRORS):
                raise RegistryError(
                    f"{where}: {what}: unreadable answer", registry=self.registry, repository=repo
                ) from None
            finally:
                resp.release()
            page = obj.get("tags") if isinstance(obj, dict) else None
            page_tags = [str(t) for t in page] if isinstance(page, list) else []
            new = [t for t in page_tags if t not in known]
            link = next_link(resp.headers.getall("Link", []))
            if page_tags and not new and link:
                raise bounded("pagination loops: a page listed only tags already seen")
            known.update(new)
            tags.extend(new)
            url = urljoin(str(resp.url), link) if link else None
        return tags

    # -- referrers (OCI 1.1) -----------------------------------------------------------------------

    async def get_referrers(self, repo: str, digest: str, *, max_pages: int = 100) -> list[dict[str, Any]] | None:
        """The descriptors of the manifests whose ``subject`` is *digest* (every ``Link`` page), or None
        when the registry has no referrers API (it answers 404: use the ``sha256-<hex>`` tag instead)."""
        await self._ensure_ready()
        url: str | None = self._url(repo, "referrers", digest)
        found: list[dict[str, Any]] = []
        seen: set[str] = set()
        what = f"list referrers of {repo}@{digest}"
        while url and url not in seen and len(seen) < max_pages:
            seen.add(url)
            resp = await self._send(
                "GET", url, scopes=self._pull(repo), what=what, repository=repo, headers={"Accept": OCI_INDEX}
            )
            if resp.status in (404, 405) and len(seen) == 1:
                resp.release()
                return None
            if resp.status != 200:
                raise await self._fail(resp, what, repo)
            try:
                obj = await resp.json(content_type=None)
            except (ValueError, *_CONNECTION_ERRORS):
                raise RegistryError(f"{self.host}: {what}: unreadable answer", registry=self.host) from None
            finally:
                resp.release()
            manifests = obj.get("manifests") if isinstance(obj, dict) else None
            found += [m for m in manifests or [] if isinstance(m, dict) and isinstance(m.get("digest"), str)]
            link = next_link(resp.headers.getall("Link", []))
            url = urljoin(str(resp.url), link) if link else None
        return found
