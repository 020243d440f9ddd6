"""`MirroredStore`: a source store whose content by digest may come from content mirrors.

In the spirit of containers/image's ``pull-from-mirror = "digest-only"`` (reference §F.1): tags (and the
HEADs that resolve them) are answered only by the source; manifests *by digest* and blobs come from the
first mirror that has them (a HEAD there first, which no mirror charges for), and from the source only
when no mirror can serve them. Content addressing makes this safe: a manifest fetched by digest is
verified on arrival (the registry client hashes it), and a blob's bytes are verified by the copier's
``verified()`` stream before its upload is committed. A mirror that serves wrong bytes or fails is not
asked for that digest again, so the copier's next attempt reads it from the next mirror or the source.

Mirrors have manners of their own (reference §F.1), and each is met here rather than counted against it:

* **Pace.** Each mirror is paced by its own limit (`MirrorSpec.rate`, requests per second; ECR Public
  allows about 1 anonymous pull a second, so ``public.ecr.aws`` defaults to 1), and a 429 from a mirror
  means "slow down": its pace halves (learned; it recovers after `RECOVER_AFTER` seconds without one),
  the request waits and is sent again, and after `MAX_THROTTLES` of them the content comes from the next
  source. A 429 never counts toward dropping the mirror.
* **Misses.** mirror.gcr.io holds only what is pulled often and never fetches what it lacks: it answers
  404 ``MANIFEST_UNKNOWN`` or 500 for the rest. A 404 or a 500 is a miss, not a failure.
* **Credentials.** ECR Public answers a stale bearer with 400 and an expired ``docker login`` with 403,
  where an anonymous pull works: such an answer makes the mirror drop its tokens and credentials and ask
  again anonymously, once per request, before it counts as a failure.
* **Stalls and crawls.** A mirror's blob download that receives nothing for the mirror's stall timeout
  (`STALL_TIMEOUT`), or whose speed over such a window is below the mirror's ``min_speed`` or far below
  (`SLOWER_THAN_OTHERS` times) the speed seen from the other sources, is given up as a failure of that
  mirror; the bytes received stay, and the rest is read from the byte reached (``Range``) from the next
  mirror that has the blob, or the source. The copier still verifies the whole blob against its digest.

A mirror that fails `MAX_FAILURES` times in a run, or fails before it ever answered (unreachable, TLS,
auth), is dropped for the rest of the run; `source_stats` names it. ``docker.io/library/python`` is
looked up at ``REGISTRY/PREFIX/library/python`` (`ContentMirror.repo`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import functools
import logging
import math
import re
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Final, TypeVar

from .._errors import DigestMismatch, NotFound, QuotaExceeded, RegistryError
from ..digest import is_digest
from ..media import Descriptor, Manifest
from ..reference import DOCKER_HUB, normalize_registry
from ..transfer import TransferStats
from ._base import BlobStream, Store

if TYPE_CHECKING:
    from ..registry.options import ClientOptions
    from ..registry.ratelimit import RateLimit

log = logging.getLogger(__name__)

T = TypeVar("T")

#: The content mirrors used when the source is Docker Hub itself and none are configured (reference §F.1).
DEFAULT_CONTENT_MIRRORS: Final = ("mirror.gcr.io", "public.ecr.aws/docker")
#: Requests per second a mirror is paced at unless its entry says otherwise (ECR Public: about 1 anonymous
#: pull a second per IP, 10 logged in; aws/aws-lambda-web-adapter #429). Others start unpaced.
DEFAULT_RATES: Final = {"public.ecr.aws": 1.0}
#: Failures (errors, wrong bytes, stalls, crawls) after which a mirror that did answer before is dropped.
MAX_FAILURES: Final = 3
#: Digests of wrong content listed per mirror in the report (the count is always exact).
MAX_LISTED: Final = 20
#: Seconds without a byte of a blob before a mirror's download is given up (the source's is resumed
#: after its client's own, longer read timeout); also the window over which a mirror's speed is judged.
STALL_TIMEOUT: Final = 20.0
#: Bytes per second below which a mirror's blob download crawls (unless the mirror's ``min_speed`` says),
#: and how many times slower than the fastest other source a mirror's download may be before it crawls.
MIN_SPEED: Final = 32 * 1024
SLOWER_THAN_OTHERS: Final = 20
#: Downloads that teach the speed of a source: at least this many bytes.
_SPEED_SAMPLE: Final = 256 * 1024
#: 429s one request to a mirror waits out before the content comes from the next source instead.
MAX_THROTTLES: Final = 4
#: After a mirror's 429: the pace of a mirror that was not paced, the slowest pace halving brings it to,
#: and the seconds without a 429 after which the pace doubles again (up to the mirror's own rate).
THROTTLED_RATE: Final = 10.0
MIN_RATE: Final = 0.25
RECOVER_AFTER: Final = 30.0

_OPTION = re.compile(r"^(rate|stall_timeout|min_speed)=(.+)$")
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmg]?)(i?b?)?(?:/s)?$", re.IGNORECASE)
_SECONDS = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s|m)?$", re.IGNORECASE)


#: Manifests served by a mirror within the current task (and the tasks it starts); see `counting_mirrored`.
_served: ContextVar[list[int] | None] = ContextVar("hubmirror_mirror_manifests", default=None)


@contextlib.contextmanager
def counting_mirrored() -> Iterator[list[int]]:
    """Count, in ``counter[0]``, the manifests a content mirror serves to GETs made inside the block (by
    this task and the tasks it starts): the sync subtracts them from an item's source GETs to report its
    Hub pulls."""
    counter = [0]
    token = _served.set(counter)
    try:
        yield counter
    finally:
        _served.reset(token)


def content_mirrors_for(source: str, configured: Sequence[str] | None) -> list[str]:
    """The mirrors to use for content read from *source*: *configured* if given (``[]``: none), else the
    defaults when *source* is Docker Hub itself, else none."""
    if configured is not None:
        return list(configured)
    return list(DEFAULT_CONTENT_MIRRORS) if normalize_registry(source) == DOCKER_HUB else []


def split_mirror(spec: str) -> tuple[str, str]:
    """``REGISTRY[/PREFIX][,OPTION=VALUE…]`` → (registry, prefix): ``public.ecr.aws/docker`` →
    (``public.ecr.aws``, ``docker``)."""
    host, _, prefix = spec.split(",", 1)[0].strip().strip("/").partition("/")
    return host, prefix.strip("/")


@dataclass(frozen=True)
class MirrorSpec:
    """One content mirror as configured: ``REGISTRY[/PREFIX]`` and its manners.

    Written ``REGISTRY[/PREFIX][,rate=N][,stall_timeout=SECONDS][,min_speed=BYTES]`` on the command line
    (``--content-mirror public.ecr.aws/docker,rate=10``) and as a mapping in the config file (``{mirror:
    public.ecr.aws/docker, rate: 10}``); a plain ``REGISTRY[/PREFIX]`` takes the defaults.
    """

    name: str  # REGISTRY[/PREFIX]
    rate: float | None = None  # requests per second (None: the default for its host, else unpaced)
    stall_timeout: float | None = None  # seconds (None: `STALL_TIMEOUT`)
    min_speed: float | None = None  # bytes per second (None: `MIN_SPEED`; 0: never judged too slow)

    @classmethod
    def parse(cls, text: str) -> MirrorSpec:
        """The spec of *text*; `ValueError` naming what is wrong."""
        name, *options = (part.strip() for part in text.strip().split(","))
        name = name.strip("/")
        if not name:
            raise ValueError(f"{text!r}: give REGISTRY[/PREFIX] first")
        values: dict[str, float] = {}
        for option in options:
            m = _OPTION.match(option.replace(" ", ""))
            if not m:
                raise ValueError(
                    f"{text!r}: {option!r} is not an option of a content mirror "
                    "(rate=REQUESTS_PER_SECOND, stall_timeout=SECONDS, min_speed=BYTES_PER_SECOND)"
                )
            key, value = m.group(1), m.group(2)
            if key in values:
                raise ValueError(f"{text!r}: {key} given twice")
            values[key] = {"rate": parse_rate, "stall_timeout": parse_seconds, "min_speed": parse_speed}[key](value)
        return cls(name, values.get("rate"), values.get("stall_timeout"), values.get("min_speed"))

    @property
    def host(self) -> str:
        return split_mirror(self.name)[0]

    @property
    def prefix(self) -> str:
        return split_mirror(self.name)[1]

    def __str__(self) -> str:
        parts = [self.name]
        for key in ("rate", "stall_timeout", "min_speed"):
            value = getattr(self, key)
            if value is not None:
                parts.append(f"{key}={value:g}")
        return ",".join(parts)

    def with_name(self, name: str) -> MirrorSpec:
        return dataclasses.replace(self, name=name)


def parse_rate(value: object) -> float:
    """Requests per second: a positive number."""
    try:
        rate = float(str(value).strip().removesuffix("/s"))
    except ValueError:
        raise ValueError(f"rate {value!r} is not a number of requests per second") from None
    if not 0 < rate < math.inf:
        raise ValueError(f"rate {value!r} must be a number above 0 (requests per second)")
    return rate


def parse_seconds(value: object) -> float:
    """Seconds: ``20``, ``20s``, ``500ms``, ``2m``; above 0."""
    m = _SECONDS.match(str(value).strip())
    if not m:
        raise ValueError(f"stall_timeout {value!r} is not a duration (e.g. 20s, 500ms, 2m)")
    seconds = float(m.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0, "": 1.0}[(m.group(2) or "").lower()]
    if seconds <= 0:
        raise ValueError(f"stall_timeout {value!r} must be above 0")
    return seconds


def parse_speed(value: object) -> float:
    """Bytes per second: ``65536``, ``64k``, ``64KiB``, ``1M``, ``1MB/s`` (k = 1024); 0 allowed."""
    m = _SIZE.match(str(value).strip())
    if not m:
        raise ValueError(f"min_speed {value!r} is not a speed in bytes per second (e.g. 64k, 1M)")
    power = " kmg".index((m.group(2) or " ").lower())
    return float(m.group(1)) * float(1024**power)


@dataclass
class SourceStats:
    """What one source of content (the source registry or a mirror) served in a run."""

    name: str  # ``registry-1.docker.io``, ``mirror.gcr.io``, ``public.ecr.aws/docker``
    role: str  # "source" or "mirror"
    manifests: int = 0  # manifests served (verified)
    blobs: int = 0  # blob streams served to the end
    bytes: int = 0  # blob bytes served
    pulls: int = 0  # manifest GETs on the source (what Docker Hub counts); 0 for mirrors
    mismatches: int = 0  # content whose bytes did not match its digest
    errors: int = 0  # failed requests (other than "not here"), stalled or crawling downloads included
    dropped: str | None = None  # why the mirror was dropped for the rest of the run
    bad_digests: list[str] = field(default_factory=list)  # the first MAX_LISTED mismatched digests
    misses: int = 0  # digests the mirror did not hold (404, or 500 as mirror.gcr.io answers): not failures
    throttled: int = 0  # 429s from the mirror (each slowed it down; not failures)
    interrupted: int = 0  # blob downloads given up midway (stalled, crawling, broken), read on elsewhere
    rate: float | None = None  # requests per second the mirror was paced at in the end (None: unpaced)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def mirror_options(options: ClientOptions) -> ClientOptions:
    """*options* for a content mirror: no retries by the client (a mirror that is down, throttling or missing
    something costs one request before the next source is asked; its 429s are paced and sent again by
    `MirroredStore`, which sees each of them), short connect timeouts, and `STALL_TIMEOUT` for its answers."""
    import aiohttp

    from ..registry.retry import RetryPolicy

    return dataclasses.replace(
        options,
        retry=RetryPolicy(attempts=1, base_delay=0.1, max_delay=1.0, max_retry_after=5.0, throttle_retries=0),
        timeout=aiohttp.ClientTimeout(total=None, connect=10, sock_connect=10, sock_read=STALL_TIMEOUT),
    )


def with_mirrors(source: Store, specs: Sequence[str | MirrorSpec], open_store: Callable[[str], Store]) -> Store:
    """*source* itself when *specs* is empty, else a `MirroredStore` over the mirrors of *specs*
    (``REGISTRY[/PREFIX][,OPTION=VALUE…]`` or `MirrorSpec`); *open_store* opens a registry host."""
    if not specs:
        return source
    mirrors: list[ContentMirror] = []
    seen: set[str] = set()
    for item in specs:
        spec = item if isinstance(item, MirrorSpec) else MirrorSpec.parse(item)
        if spec.name in seen:
            continue
        seen.add(spec.name)
        rate = spec.rate if spec.rate is not None else DEFAULT_RATES.get(normalize_registry(spec.host.lower()))
        mirrors.append(
            ContentMirror(
                open_store(spec.host),
                spec.prefix,
                name=spec.name,
                rate=rate,
                stall_timeout=spec.stall_timeout,
                min_speed=spec.min_speed,
            )
        )
    return MirroredStore(source, mirrors)


def source_stats(store: Store) -> list[SourceStats]:
    """What *store* served as a source: one entry, or with content mirrors one per mirror too."""
    if isinstance(store, MirroredStore):
        return store.source_stats()
    return [_own_stats(store)]


def _own_stats(store: Store) -> SourceStats:
    s = store.stats
    return SourceStats(store.name, "source", s.manifest_gets, s.blob_gets, s.blob_bytes_read, s.manifest_gets)


class _Busy(Exception):
    """A mirror kept answering 429 for one request: the content comes from the next source (not a failure)."""


class _Crawling(Exception):
    """A mirror's blob download is far too slow: given up like a stall."""


class _Pacer:
    """The pace of the requests to one mirror: at most `rate` a second (None: unpaced), its configured rate
    at most; halved by its 429s and doubled again after `RECOVER_AFTER` seconds without one."""

    def __init__(self, rate: float | None) -> None:
        self.limit = rate
        self.rate = rate
        self._next = 0.0  # loop time of the next request's turn
        self._slowed_at = -math.inf
        self._sent: collections.deque[float] = collections.deque(maxlen=64)

    async def turn(self) -> None:
        """Wait for this request's turn."""
        now = asyncio.get_running_loop().time()
        if self.rate is not None and now - self._slowed_at >= RECOVER_AFTER:
            ceiling = self.limit if self.limit is not None else THROTTLED_RATE
            if self.rate < ceiling:
                self.rate = min(ceiling, self.rate * 2)
                self._slowed_at = now  # one doubling per quiet period
        start = max(now, self._next)
        if self.rate:
            self._next = start + 1.0 / self.rate
        self._sent.append(start)
        if start > now:
            await asyncio.sleep(start - now)

    def slow_down(self, retry_after: float | None) -> float:
        """A 429: halve the pace (once a second at most: the requests already sent answer 429 too) and hold
        every request for *retry_after* (or one turn). Returns the new pace."""
        now = asyncio.get_running_loop().time()
        if now - self._slowed_at >= 1.0 or self.rate is None:
            sent = sum(1 for t in self._sent if now - t <= 1.0)  # what an unpaced mirror was sent a second
            base = self.rate if self.rate is not None else min(THROTTLED_RATE, max(float(sent), MIN_RATE * 2))
            self.rate = max(MIN_RATE, base / 2)
            self._slowed_at = now
        assert self.rate is not None
        wait = retry_after if retry_after is not None else 1.0 / self.rate
        self._next = max(self._next, now + min(wait, 60.0))
        return self.rate


class ContentMirror:
    """One mirror: a store, the repository prefix under which it keeps the source's repositories, and its
    manners (pace, stall timeout, slowest acceptable speed)."""

    def __init__(
        self,
        store: Store,
        prefix: str = "",
        *,
        name: str | None = None,
        rate: float | None = None,
        stall_timeout: float | None = None,
        min_speed: float | None = None,
    ) -> None:
        self.store = store
        self.prefix = prefix.strip("/")
        self.name = name or (f"{store.name}/{self.prefix}" if self.prefix else store.name)
        self.stats = SourceStats(self.name, "mirror", rate=rate)
        self.answered = False  # it gave at least one answer (even "not here") this run
        self.failures = 0
        self.pacer = _Pacer(rate)
        self.stall_timeout = stall_timeout or STALL_TIMEOUT
        self.min_speed = MIN_SPEED if min_speed is None else min_speed
        self.anonymous = False  # its credentials were dropped after a 400/401/403

    def __repr__(self) -> str:
        return f"ContentMirror({self.name!r})"

    def repo(self, repo: str) -> str:
        """Where the source's *repo* lives on this mirror: ``library/python`` → ``PREFIX/library/python``."""
        return f"{self.prefix}/{repo}" if self.prefix else repo

    @property
    def live(self) -> bool:
        return self.stats.dropped is None

    def renew_auth(self, e: RegistryError) -> bool:
        """After a 400/401/403: forget the mirror's tokens and credentials (the next request is anonymous).
        False when there is nothing to renew (not a registry)."""
        from .registry import RegistryStore

        if not isinstance(self.store, RegistryStore):
            return False
        client = self.store.client
        if client.has_credentials and not self.anonymous:
            self.anonymous = True
            log.warning(
                "content mirror %s refused the credentials found for %s (HTTP %s); reading it anonymously for the "
                "rest of the run (an expired `docker login %s`? `docker logout %s` removes it)",
                self.name,
                client.registry,
                e.status,
                client.registry,
                client.registry,
            )
        client.reset_auth(anonymous=True)
        return True


class MirroredStore:
    """*source* with content by digest served by *mirrors* where they have it. Implements `Store`.

    ``stats`` and ``ratelimit`` are the source's: only what the source itself answered counts there (on
    Docker Hub, only its manifest GETs are pulls). Writes go to the source, unchanged.
    """

    def __init__(self, source: Store, mirrors: Sequence[ContentMirror]) -> None:
        self.source = source
        self.mirrors = list(mirrors)
        self.name: str = source.name
        self.stats: TransferStats = source.stats
        self._bad: dict[str, set[int]] = {}  # digest → indexes of mirrors not to ask for it again
        self._speeds: dict[str, float] = {}  # source name → bytes per second seen on its blob downloads

    def __repr__(self) -> str:
        return f"MirroredStore({self.source!r}, mirrors={[m.name for m in self.mirrors]!r})"

    @property
    def ratelimit(self) -> RateLimit | None:
        return self.source.ratelimit

    # -- bookkeeping ---------------------------------------------------------------------------------

    def _candidates(self, digest: str) -> list[tuple[int, ContentMirror]]:
        bad = self._bad.get(digest, set())
        return [(i, m) for i, m in enumerate(self.mirrors) if m.live and i not in bad]

    def _skip(self, i: int, digest: str) -> None:
        """Do not ask mirror *i* for *digest* again in this run."""
        self._bad.setdefault(digest, set()).add(i)

    def _missed(self, i: int, m: ContentMirror, digest: str) -> None:
        """Mirror *m* does not hold *digest*: normal for a mirror (not a failure), and an answer."""
        self._skip(i, digest)
        m.answered = True
        m.stats.misses += 1

    def _failed(self, i: int, m: ContentMirror, digest: str, e: BaseException, *, mismatch: bool = False) -> None:
        """Note that mirror *m* could not serve *digest*; drop it when it keeps failing (or never answered)."""
        self._skip(i, digest)
        if not m.live and not mismatch:
            return  # requests in flight when it was dropped: already accounted for
        m.failures += 1
        if mismatch:
            m.stats.mismatches += 1
            if len(m.stats.bad_digests) < MAX_LISTED:
                m.stats.bad_digests.append(digest)
            log.warning("content mirror %s served wrong bytes for %s; using the next source", m.name, digest)
        else:
            m.stats.errors += 1
            log.info("content mirror %s: %s: %s", m.name, digest, e)
        if m.live and (not m.answered or m.failures >= MAX_FAILURES):
            why = "unreachable" if not m.answered else f"{m.failures} failures"
            m.stats.dropped = f"{why} ({_describe(e)})"
            log.warning("content mirror %s dropped for this run: %s", m.name, m.stats.dropped)

    def _refused(self, i: int, m: ContentMirror, digest: str, e: BaseException) -> None:
        """What a mirror answered instead of *digest*: a miss, a 429 storm (neither counts), or a failure."""
        if isinstance(e, _Busy):
            self._skip(i, digest)
        elif _is_miss(e):
            self._missed(i, m, digest)
        else:
            self._failed(i, m, digest, e, mismatch=isinstance(e, DigestMismatch))

    async def _ask(self, m: ContentMirror, call: Callable[[], Awaitable[T]]) -> T:
        """One request to mirror *m*, in its pace: a 429 slows the mirror down and is sent again (after
        `MAX_THROTTLES`, `_Busy`); a 400/401/403 is sent again once, anonymously."""
        throttles = 0
        renewed = False
        while True:
            await m.pacer.turn()
            try:
                result = await call()
            except RegistryError as e:
                if e.status == 429:
                    m.answered = True
                    m.stats.throttled += 1
                    throttles += 1
                    if throttles > MAX_THROTTLES:
                        raise _Busy(f"{m.name} kept answering 429") from None
                    retry_after = e.retry_after if isinstance(e, QuotaExceeded) else None
                    rate = m.pacer.slow_down(retry_after)
                    m.stats.rate = rate
                    log.info("content mirror %s: HTTP 429 (slow down); now %.2g requests/s", m.name, rate)
                    continue
                if e.status in (400, 401, 403) and not renewed and m.renew_auth(e):
                    renewed = True
                    continue
                raise
            m.answered = True
            return result

    def _observe(self, name: str, nbytes: int, seconds: float) -> None:
        """A blob download of *nbytes* that waited *seconds* for its source *name*: learn its speed (at least
        *nbytes* a millisecond: a download whose bytes were all there whenever asked for is at least that fast)."""
        if nbytes >= _SPEED_SAMPLE:
            speed = nbytes / max(seconds, 0.001)
            old = self._speeds.get(name)
            self._speeds[name] = speed if old is None else (old + speed) / 2

    def _slowest_allowed(self, m: ContentMirror) -> float:
        """Bytes per second below which *m*'s download crawls: its ``min_speed``, or far below the others."""
        others = [v for k, v in self._speeds.items() if k != m.name]
        relative = max(others) / SLOWER_THAN_OTHERS if others and m.min_speed > 0 else 0.0
        return max(m.min_speed, relative)

    def source_stats(self) -> list[SourceStats]:
        """The source (manifests it served, its pulls, blob bytes) and each mirror, in order of use."""
        for m in self.mirrors:
            m.stats.rate = m.pacer.rate
        return [_own_stats(self.source), *(m.stats for m in self.mirrors)]

    async def mirror_with(self, repo: str, digest: str) -> str | None:
        """The name of the first live mirror that holds manifest *digest* of *repo* (HEADs only), or None."""
        for i, m in self._candidates(digest):
            try:
                found = await self._ask(m, functools.partial(m.store.head_manifest, m.repo(repo), digest))
            except Exception as e:  # a mirror never fails the caller
                self._refused(i, m, digest, e)
                continue
            if found is not None and found.digest == digest:
                return m.name
        return None

    # -- the Store protocol --------------------------------------------------------------------------

    async def head_manifest(self, repo: str, ref: str) -> Descriptor | None:
        """Answered by the source only (tags are never resolved on a mirror)."""
        return await self.source.head_manifest(repo, ref)

    async def get_manifest(self, repo: str, ref: str) -> Manifest:
        """By digest: from the first mirror that has it, verified; else from the source. A tag is resolved
        with a (free) HEAD on the source first, then fetched by that digest."""
        if not is_digest(ref):
            if not any(m.live for m in self.mirrors):
                return await self.source.get_manifest(repo, ref)
            head = await self.source.head_manifest(repo, ref)
            if head is None:
                raise NotFound(f"{self.source.name}/{repo}:{ref} not found", repository=repo)
            ref = head.digest
        for i, m in self._candidates(ref):
            try:
                there = await self._ask(m, functools.partial(m.store.head_manifest, m.repo(repo), ref))
                if there is None:
                    self._missed(i, m, ref)
                    continue
                manifest = await self._ask(m, functools.partial(m.store.get_manifest, m.repo(repo), ref))
                if manifest.digest != ref:
                    raise DigestMismatch(f"{m.name}/{m.repo(repo)}@{ref}: got {manifest.digest}")
            except Exception as e:
                self._refused(i, m, ref, e)
                continue
            m.stats.manifests += 1
            counter = _served.get()
            if counter is not None:
                counter[0] += 1
            return manifest
        return await self.source.get_manifest(repo, ref)

    def open_blob(self, repo: str, desc: Descriptor) -> BlobStream:
        return self._open_blob(repo, desc)

    @contextlib.asynccontextmanager
    async def _open_blob(self, repo: str, desc: Descriptor) -> AsyncIterator[AsyncIterator[bytes]]:
        """From the first mirror that has the blob (HEAD first); else from the source; a mirror that stalls,
        crawls or breaks midway hands over to the next source at the byte reached (`_Relay`). The caller
        verifies the bytes: when that fails, no mirror that served part of them is asked for this blob
        again, and the caller's next attempt reads it from the next mirror or the source."""
        relay = _Relay(self, repo, desc)
        await relay.open()
        stream = relay.stream()
        try:
            yield stream
        except BaseException as e:
            if isinstance(e, asyncio.CancelledError | GeneratorExit | KeyboardInterrupt):
                raise
            # Wrong bytes (the copier's check): never again from the mirrors that served them. A failure of
            # the destination after the mirrors' bytes all arrived is not theirs.
            if _is_mismatch(e):
                for i, m in relay.served:
                    self._failed(i, m, desc.digest, e, mismatch=True)
            raise
        finally:
            await stream.aclose()
            await relay.close()

    async def put_manifest(self, repo: str, ref: str, manifest: Manifest) -> None:
        await self.source.put_manifest(repo, ref, manifest)

    async def delete_manifest(self, repo: str, ref: str) -> None:
        await self.source.delete_manifest(repo, ref)

    async def has_blob(self, repo: str, desc: Descriptor) -> bool:
        return await self.source.has_blob(repo, desc)

    async def put_blob(self, repo: str, desc: Descriptor, chunks: AsyncIterator[bytes]) -> None:
        await self.source.put_blob(repo, desc, chunks)

    async def mount_blob(self, repo: str, desc: Descriptor, from_repo: str) -> bool:
        return await self.source.mount_blob(repo, desc, from_repo)

    async def list_tags(self, repo: str) -> list[str]:
        return await self.source.list_tags(repo)

    async def close(self) -> None:
        for store in (self.source, *(m.store for m in self.mirrors)):
            with contextlib.suppress(Exception):
                await store.close()


class _Relay:
    """One blob's bytes, from the first mirror that has it and, when that mirror stalls, crawls, breaks or
    ends short midway, on from the byte reached at the next mirror that has it or the source (``Range``).

    Only the source's download is resumed on the same server (by its client); a mirror's is handed over.
    """

    def __init__(self, store: MirroredStore, repo: str, desc: Descriptor) -> None:
        self.store, self.repo, self.desc = store, repo, desc
        self.offset = 0  # bytes passed on so far
        self.served: list[tuple[int, ContentMirror]] = []  # mirrors whose bytes were passed on
        self._tried: set[int] = set()  # mirrors asked for this blob by this relay
        self._current: tuple[int, ContentMirror] | None = None  # None: the source
        self._chunks: AsyncIterator[bytes] | None = None
        self._stack: contextlib.AsyncExitStack | None = None

    async def open(self) -> None:
        """Open the next source of the bytes from `offset` on: a mirror that has the blob, else the source."""
        await self.close()
        store, digest = self.store, self.desc.digest
        for i, m in store._candidates(digest):
            if i in self._tried:
                continue
            self._tried.add(i)
            stack = contextlib.AsyncExitStack()
            try:
                has = await store._ask(m, functools.partial(m.store.has_blob, m.repo(self.repo), self.desc))
                if not has:
                    store._missed(i, m, digest)
                    continue
                opener = functools.partial(self._enter, stack, m.store, m.repo(self.repo), m.stall_timeout)
                chunks = await store._ask(m, opener)
            except Exception as e:
                await stack.aclose()
                if _is_no_range(e):
                    store._skip(i, digest)  # cannot start midway: not a failure, just not for this blob
                else:
                    store._refused(i, m, digest, e)
                continue
            self._current, self._chunks, self._stack = (i, m), chunks, stack
            return
        stack = contextlib.AsyncExitStack()
        try:
            self._chunks = await self._enter(stack, store.source, self.repo, None)
        except BaseException:
            await stack.aclose()
            raise
        self._current, self._stack = None, stack

    async def _enter(
        self, stack: contextlib.AsyncExitStack, source: Store, repo: str, stall: float | None
    ) -> AsyncIterator[bytes]:
        """Open *source*'s stream of the blob from `offset` on (a mirror's: not resumed there, *stall*)."""
        from .registry import RegistryStore

        offset = self.offset
        if isinstance(source, RegistryStore):
            mirror = stall is not None
            opened = source.open_blob_at(
                repo, self.desc, offset, resumes=0 if mirror else None, stall=stall if mirror else None
            )
            return await stack.enter_async_context(opened)
        chunks = await stack.enter_async_context(source.open_blob(repo, self.desc))
        return _skipped(chunks, offset) if offset else chunks

    async def close(self) -> None:
        """Close the current stream (its response released)."""
        chunks, stack = self._chunks, self._stack
        self._chunks = self._stack = None
        if chunks is not None:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
        if stack is not None:
            with contextlib.suppress(Exception):
                await stack.aclose()

    async def stream(self) -> AsyncGenerator[bytes, None]:
        """The blob's bytes, handed over between sources as needed (not verified here: the copier does)."""
        loop = asyncio.get_running_loop()
        size = self.desc.size
        while True:
            chunks, current = self._chunks, self._current
            assert chunks is not None
            mirror = current[1] if current is not None else None
            floor = self.store._slowest_allowed(mirror) if mirror is not None else 0.0
            window = mirror.stall_timeout if mirror is not None else math.inf
            got = waited = 0.0  # this window's bytes and seconds spent waiting for them
            total = total_wait = 0.0
            start_offset = self.offset
            last = loop.time()  # when the last byte came (or the stream started)
            try:
                while True:
                    t0 = loop.time()
                    try:
                        piece = await anext(chunks)
                    except StopAsyncIteration:
                        break
                    last = loop.time()
                    n = len(piece)
                    got += n
                    waited += last - t0
                    total += n
                    total_wait += last - t0
                    if current is not None and n and current not in self.served:
                        self.served.append(current)
                    self.offset += n
                    if mirror is not None:
                        mirror.stats.bytes += n
                    yield piece
                    if waited >= window:
                        speed = got / waited
                        if speed < floor:
                            raise _Crawling(f"crawling at {_speed(speed)} (slower than {_speed(floor)})")
                        got = waited = 0.0
            except (GeneratorExit, asyncio.CancelledError):
                raise
            except Exception as e:
                if current is None:
                    raise  # the source's own download failed (its client resumed it already)
                idle = loop.time() - last
                why = f"stalled ({idle:.0f}s without a byte)" if idle >= window * 0.75 else _describe(e)
                self._hand_over(current, e, why)
                await self.open()
                continue
            self.store._observe(mirror.name if mirror is not None else "", int(total), total_wait)
            if current is not None and 0 <= self.offset < size:
                short = RegistryError(f"the download ended at byte {self.offset} of {size}")
                self._hand_over(current, short, str(short))
                await self.open()
                continue
            if mirror is not None and self.offset > start_offset:
                mirror.stats.blobs += 1
            return

    def _hand_over(self, current: tuple[int, ContentMirror], e: BaseException, why: str) -> None:
        """Give *current*'s download up (a failure of that mirror); the next source reads on from `offset`."""
        i, m = current
        m.stats.interrupted += 1
        log.warning(
            "content mirror %s: blob %s %s at byte %d; reading on from there at the next source",
            m.name,
            self.desc.digest,
            why,
            self.offset,
        )
        failure = RegistryError(f"blob {self.desc.digest} {why} at byte {self.offset}")
        failure.__cause__ = e
        self.store._failed(i, m, self.desc.digest, failure)


async def _skipped(chunks: AsyncIterator[bytes], offset: int) -> AsyncIterator[bytes]:
    """*chunks* without their first *offset* bytes (a store that cannot start midway)."""
    left = offset
    async for chunk in chunks:
        if left >= len(chunk):
            left -= len(chunk)
            continue
        yield chunk[left:] if left else chunk
        left = 0


def _is_miss(e: BaseException) -> bool:
    """A mirror's "not here": 404, or 500 (mirror.gcr.io answers uncached content so; jib #2916)."""
    return isinstance(e, RegistryError) and e.status in (404, 500)


def _is_no_range(e: BaseException) -> bool:
    return isinstance(e, RegistryError) and e.status is None and "no Range support" in str(e)


def _is_mismatch(e: BaseException | None) -> bool:
    """True if *e*, or an exception it wraps, is a `DigestMismatch`."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, DigestMismatch):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


def _speed(bps: float) -> str:
    return f"{bps / 1024:.1f} KiB/s" if bps < 1024 * 1024 else f"{bps / 1024 / 1024:.1f} MiB/s"


def _describe(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return text if len(text) <= 200 else text[:197] + "..."


__all__ = [
    "DEFAULT_CONTENT_MIRRORS",
    "DEFAULT_RATES",
    "MAX_FAILURES",
    "ContentMirror",
    "MirrorSpec",
    "MirroredStore",
    "SourceStats",
    "content_mirrors_for",
    "counting_mirrored",
    "mirror_options",
    "parse_rate",
    "parse_seconds",
    "parse_speed",
    "source_stats",
    "split_mirror",
    "with_mirrors",
]
