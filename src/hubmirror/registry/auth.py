"""Registry authentication: parse ``WWW-Authenticate`` challenges, fetch and cache Bearer tokens, Basic.

Tokens are cached per scope set, refreshed shortly before they expire and dropped on a 401 (§D.2).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import logging
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import aiohttp

from .._errors import AuthError, RegistryError
from ._http import MAX_TOKEN_BODY, read_capped, read_some
from ._proxy import proxy_for
from .credentials import Credentials, env_prefix
from .retry import RETRYABLE_STATUSES, RetryPolicy, retry_after_hint

log = logging.getLogger(__name__)

#: ``expires_in`` when the token server omits it (token.md).
DEFAULT_TOKEN_LIFETIME = 60
_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


@dataclass(frozen=True)
class Challenge:
    """One challenge of a ``WWW-Authenticate`` header: a lower-cased scheme and its auth-params."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict, hash=False)
    token68: str | None = None

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")

    @property
    def service(self) -> str | None:
        return self.params.get("service")

    @property
    def scopes(self) -> list[str]:
        """The ``scope`` param split into scopes (space-separated per RFC 6749; commas stay inside)."""
        return self.params.get("scope", "").split()


def parse_www_authenticate(header: str) -> list[Challenge]:
    """Parse a ``WWW-Authenticate`` value (RFC 7235): ``Bearer realm="…",scope="a:b:pull,push"``.

    Handles quoted strings with escapes, commas inside quotes, several challenges in one header, and
    token68 credentials. Parameter names are lower-cased.
    """
    challenges: list[Challenge] = []
    i, n = 0, len(header)

    def skip_ws(j: int) -> int:
        while j < n and header[j] in " \t":
            j += 1
        return j

    def read_token(j: int) -> tuple[str, int]:
        start = j
        while j < n and header[j] in _TCHAR:
            j += 1
        return header[start:j], j

    while i < n:
        i = skip_ws(i)
        while i < n and header[i] in ", \t":
            i += 1
        if i >= n:
            break
        scheme, i = read_token(i)
        if not scheme:
            break  # garbage: stop rather than loop
        params: dict[str, str] = {}
        token68: str | None = None
        i = skip_ws(i)
        # Parameters follow until the next challenge (a token followed by space, not by '=').
        while i < n:
            j = skip_ws(i)
            while j < n and header[j] in ", \t":
                j += 1
            name, k = read_token(j)
            k2 = skip_ws(k)
            if not name or k2 >= n or header[k2] != "=":
                # Either a new challenge, or token68 right after the scheme.
                if name and not params and token68 is None and (k2 >= n or header[k2] in ",=") and j == i:
                    end = k
                    while end < n and header[end] == "=":
                        end += 1
                    token68, i = header[j:end], end
                    continue
                break
            if k2 + 1 < n and header[k2 + 1] == "=" and not params and token68 is None and j == i:
                # token68 ending in '=' padding
                end = k2
                while end < n and header[end] == "=":
                    end += 1
                token68, i = header[j:end], end
                continue
            k = skip_ws(k2 + 1)
            if k < n and header[k] == '"':
                k += 1
                buf: list[str] = []
                while k < n and header[k] != '"':
                    if header[k] == "\\" and k + 1 < n:
                        k += 1
                    buf.append(header[k])
                    k += 1
                value = "".join(buf)
                k += 1  # closing quote
            else:
                start = k
                while k < n and header[k] not in ", \t":
                    k += 1
                value = header[start:k]
            params[name.lower()] = value
            i = skip_ws(k)
            if i < n and header[i] == ",":
                i += 1
        challenges.append(Challenge(scheme.lower(), params, token68))
    return challenges


def repository_scope(repository: str, actions: Iterable[str] = ("pull",)) -> str:
    """``repository:<name>:<actions>``, e.g. ``repository:library/alpine:pull,push``."""
    return f"repository:{repository}:{','.join(actions)}"


def merge_scopes(scopes: Iterable[str]) -> frozenset[str]:
    """Merge scopes naming the same resource: ``r:a:pull`` + ``r:a:push`` → ``r:a:pull,push``.

    The resource name may contain ``host:port`` (scope.md), so type and actions are split off the ends.
    Answers are cached (every request merges its scopes, and a run asks for few distinct sets).
    """
    return _merge_scopes(scopes if isinstance(scopes, (tuple, frozenset)) else tuple(scopes))


@functools.lru_cache(maxsize=4096)
def _merge_scopes(scopes: tuple[str, ...] | frozenset[str]) -> frozenset[str]:
    merged: dict[tuple[str, str], set[str]] = {}
    order: dict[tuple[str, str], list[str]] = {}
    for scope in scopes:
        rtype, _, rest = scope.partition(":")
        name, _, actions = rest.rpartition(":")
        key = (rtype, name)
        acts = order.setdefault(key, [])
        for a in actions.split(","):
            if a and a not in merged.setdefault(key, set()):
                merged[key].add(a)
                acts.append(a)
    return frozenset(f"{t}:{n}:{','.join(sorted(order[(t, n)]))}" for t, n in order)


@dataclass
class Token:
    """A Bearer token and when it stops being usable. Never printed."""

    value: str = field(repr=False)
    expires_at: float
    lifetime: float

    def fresh(self, now: float | None = None) -> bool:
        """True while more than a fifth of its lifetime (at most 30 s) remains."""
        margin = min(30.0, self.lifetime / 5)
        return (now if now is not None else time.monotonic()) < self.expires_at - margin


class Authenticator:
    """Turns the registry's challenge plus optional credentials into ``Authorization`` header values."""

    def __init__(self, registry: str, credentials: Credentials | None) -> None:
        self.registry = registry
        self.credentials = credentials
        self.challenge: Challenge | None = None
        self._tokens: dict[tuple[str, str, frozenset[str]], Token] = {}
        self._locks: dict[tuple[str, str, frozenset[str]], asyncio.Lock] = {}
        self.token_fetches = 0
        #: TLS for the token server: the registry's own settings (CA, client certificate, insecure).
        self.ssl: ssl.SSLContext | bool = True
        #: How token requests are retried. `on_retry` is called with the status (0: no answer) and the delay
        #: before each retry: the registry's client counts it, and a 429 as an abuse back-off that slows it.
        self.retry = RetryPolicy()
        self.on_retry: Callable[[int, float], None] | None = None

    def __repr__(self) -> str:
        user = self.credentials.username if self.credentials else None
        return f"Authenticator(registry={self.registry!r}, user={user!r}, tokens={len(self._tokens)})"

    def rejected(self, status: int, what: str, *, repository: str | None = None, by: str = "") -> AuthError:
        """The error for a 401/403 answer to *what*: which registry refused which credentials (their source
        — a config entry, an environment variable, an auth file, a helper — and user name; never the secret)."""
        by = f" {by}" if by else ""
        if self.credentials is None:
            message = (
                f"{self.registry}{by} refused anonymous access ({what}: HTTP {status}): no credentials were found "
                f"for {self.registry} (config `credentials:`, {env_prefix(self.registry)}USERNAME/PASSWORD, or "
                "`hubmirror login`)"
            )
        else:
            who = f"user {self.credentials.username!r} from {self.credentials.source}"
            if status == 403:
                message = (
                    f"credentials for {self.registry} were rejected{by}: {who} is not allowed to do this "
                    f"({what}: HTTP 403)"
                )
            else:
                message = f"credentials for {self.registry} were rejected{by}: {who} ({what}: HTTP {status})"
        return AuthError(
            message,
            status=status,
            code="DENIED" if status == 403 else "UNAUTHORIZED",
            registry=self.registry,
            repository=repository,
        )

    def set_challenges(self, challenges: list[Challenge]) -> None:
        """Adopt the best challenge offered: Bearer over Basic; others are ignored."""
        by_scheme = {c.scheme: c for c in challenges}
        self.challenge = by_scheme.get("bearer") or by_scheme.get("basic")

    @property
    def scheme(self) -> str | None:
        return self.challenge.scheme if self.challenge else None

    def invalidate(self, scopes: Iterable[str]) -> None:
        """Forget the cached token for *scopes* (after a 401)."""
        key = self._key(frozenset(scopes))
        if key is not None:
            self._tokens.pop(key, None)

    def _key(self, scopes: frozenset[str]) -> tuple[str, str, frozenset[str]] | None:
        if self.challenge is None or self.challenge.scheme != "bearer":
            return None
        return (self.challenge.realm or "", self.challenge.service or "", scopes)

    async def header(self, session: aiohttp.ClientSession, scopes: Iterable[str]) -> str | None:
        """The ``Authorization`` value for a request needing *scopes*; None if the registry wants none."""
        if self.challenge is None:
            return None
        if self.challenge.scheme == "basic":
            if self.credentials is None:
                raise AuthError(
                    f"registry {self.registry} requires a login (Basic auth) and no credentials were found",
                    status=401,
                    registry=self.registry,
                )
            return self._basic()
        key = self._key(merge_scopes(scopes))
        assert key is not None
        token = self._tokens.get(key)
        if token is not None and token.fresh():
            return f"Bearer {token.value}"
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            token = self._tokens.get(key)
            if token is None or not token.fresh():
                token = await self._fetch(session, key[2])
                self._tokens[key] = token
        return f"Bearer {token.value}"

    def _basic(self) -> str:
        assert self.credentials is not None
        raw = f"{self.credentials.username}:{self.credentials.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    async def _fetch(self, session: aiohttp.ClientSession, scopes: frozenset[str]) -> Token:
        """GET the realm with service and every scope, with Basic credentials if we have them.

        The token server sits behind the same abuse limit as the registry (skopeo #325): a 429, a 5xx or a
        dropped connection is retried with backoff, honouring ``Retry-After`` (429s on their own count, as
        in `RetryPolicy.throttle_retries`); each retry is reported to `on_retry`. A 401/403 is the
        credentials' refusal and is reported at once.
        """
        assert self.challenge is not None
        realm = self.challenge.realm
        if not realm:
            raise AuthError(f"registry {self.registry} sent a Bearer challenge without a realm", registry=self.registry)
        query: list[tuple[str, str]] = []
        if self.challenge.service:
            query.append(("service", self.challenge.service))
        query.extend(("scope", s) for s in sorted(scopes))
        headers = {"Authorization": self._basic()} if self.credentials else {}
        who = f"user {self.credentials.username!r}" if self.credentials else "anonymous access"
        attempt = throttles = sent = 0
        while True:
            attempt += 1
            sent += 1
            self.token_fetches += 1
            log.debug("token for %s scopes %s (%s)", self.registry, sorted(scopes), who)
            try:
                async with session.get(
                    realm, params=query, headers=headers, allow_redirects=True, proxy=proxy_for(realm), ssl=self.ssl
                ) as resp:
                    status = resp.status
                    body = await read_capped(resp, MAX_TOKEN_BODY) if status == 200 else await read_some(resp)
                    answer = resp.headers
            except (aiohttp.ClientError, TimeoutError) as e:
                if attempt < self.retry.attempts:
                    delay = self.retry.delay(attempt)
                    log.info("token server %s: %s; retrying in %.2fs", realm, type(e).__name__, delay)
                    if self.on_retry is not None:
                        self.on_retry(0, delay)
                    await asyncio.sleep(delay)
                    continue
                raise RegistryError(
                    f"token server {realm} for {self.registry} unreachable: {type(e).__name__}", registry=self.registry
                ) from None
            throttle = status == 429 and throttles < self.retry.throttle_retries
            if status in RETRYABLE_STATUSES and (attempt < self.retry.attempts or throttle):
                delay = self.retry.delay(attempt, retry_after_hint(answer, body or b""))
                if status == 429:
                    if throttle:
                        attempt -= 1
                    throttles += 1
                if self.on_retry is not None:
                    self.on_retry(status, delay)
                log.info("token server %s answered HTTP %d; retrying in %.2fs", realm, status, delay)
                await asyncio.sleep(delay)
                continue
            break
        if status in (401, 403):
            raise self.rejected(status, "token request", by=f"(token server {realm})")
        if status != 200:
            raise RegistryError(
                f"token server {realm} for {self.registry} answered HTTP {status}"
                + (f" ({sent} attempts)" if sent > 1 else ""),
                status=status,
                registry=self.registry,
            )
        if body is None:
            raise AuthError(f"token server {realm} sent more than {MAX_TOKEN_BODY} bytes", registry=self.registry)
        try:
            obj = json.loads(body)
            value = obj.get("token") or obj.get("access_token")
            lifetime = float(obj.get("expires_in") or DEFAULT_TOKEN_LIFETIME)
        except (ValueError, AttributeError, TypeError):
            raise AuthError(f"token server {realm} sent an unreadable answer", registry=self.registry) from None
        if not isinstance(value, str) or not value:
            raise AuthError(f"token server {realm} sent no token", registry=self.registry)
        lifetime = max(lifetime, 1.0)
        return Token(value, time.monotonic() + lifetime, lifetime)
