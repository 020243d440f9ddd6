"""`MirroredStore`: a source store whose content by digest may come from content mirrors.

In the spirit of containers/image's ``pull-from-mirror = "digest-only"`` (reference §F.1): tags (and the
HEADs that resolve them) are answered only by the source; manifests *by digest* and blobs come from the
first mirror that has them (a HEAD there first, which no mirror charges for), and from the source only
when no mirror can serve them. Content addressing makes this safe: a manifest fetched by digest is
verified on arrival (the registry client hashes it), and a blob's bytes are verified by the copier's
``verified()`` stream before its upload is committed. A mirror that serves wrong bytes or fails is not
asked for that digest again, so the copier's next attempt reads it from the next mirror or the source.

A mirror that fails `MAX_FAILURES` times in a run, or fails before it ever answered (unreachable, TLS,
auth), is dropped for the rest of the run; `source_stats` names it. ``docker.io/library/python`` is
looked up at ``REGISTRY/PREFIX/library/python`` (`ContentMirror.repo`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Final

from .._errors import DigestMismatch, NotFound
from ..digest import is_digest
from ..media import Descriptor, Manifest
from ..reference import DOCKER_HUB, normalize_registry
from ..transfer import TransferStats
from ._base import BlobStream, Store

if TYPE_CHECKING:
    from ..registry.options import ClientOptions
    from ..registry.ratelimit import RateLimit

log = logging.getLogger(__name__)

#: The content mirrors used when the source is Docker Hub itself and none are configured (reference §F.1).
DEFAULT_CONTENT_MIRRORS: Final = ("mirror.gcr.io", "public.ecr.aws/docker")
#: Failures (errors or wrong bytes) after which a mirror that did answer before is dropped for the run.
MAX_FAILURES: Final = 3
#: Digests of wrong content listed per mirror in the report (the count is always exact).
MAX_LISTED: Final = 20


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
    """``REGISTRY[/PREFIX]`` → (registry, prefix): ``public.ecr.aws/docker`` → (``public.ecr.aws``, ``docker``)."""
    host, _, prefix = spec.strip().strip("/").partition("/")
    return host, prefix.strip("/")


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
    errors: int = 0  # failed requests (other than "not here")
    dropped: str | None = None  # why the mirror was dropped for the rest of the run
    bad_digests: list[str] = field(default_factory=list)  # the first MAX_LISTED mismatched digests

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def mirror_options(options: ClientOptions) -> ClientOptions:
    """*options* for a content mirror: few, quick retries and a short connect timeout, so a mirror that is
    down or throttling costs little before the next source is asked."""
    import aiohttp

    from ..registry.retry import RetryPolicy

    return dataclasses.replace(
        options,
        retry=RetryPolicy(attempts=2, base_delay=0.5, max_delay=2.0, max_retry_after=10.0, throttle_retries=0),
        timeout=aiohttp.ClientTimeout(total=None, connect=10, sock_connect=10, sock_read=120),
    )


def with_mirrors(source: Store, specs: Sequence[str], open_store: Callable[[str], Store]) -> Store:
    """*source* itself when *specs* is empty, else a `MirroredStore` over the mirrors ``REGISTRY[/PREFIX]``
    of *specs*; *open_store* opens a registry host."""
    if not specs:
        return source
    mirrors = []
    for spec in dict.fromkeys(specs):
        host, prefix = split_mirror(spec)
        mirrors.append(ContentMirror(open_store(host), prefix, name=spec.strip().strip("/")))
    return MirroredStore(source, mirrors)


def source_stats(store: Store) -> list[SourceStats]:
    """What *store* served as a source: one entry, or with content mirrors one per mirror too."""
    if isinstance(store, MirroredStore):
        return store.source_stats()
    return [_own_stats(store)]


def _own_stats(store: Store) -> SourceStats:
    s = store.stats
    return SourceStats(store.name, "source", s.manifest_gets, s.blob_gets, s.blob_bytes_read, s.manifest_gets)


class ContentMirror:
    """One mirror: a store plus the repository prefix under which it keeps the source's repositories."""

    def __init__(self, store: Store, prefix: str = "", *, name: str | None = None) -> None:
        self.store = store
        self.prefix = prefix.strip("/")
        self.name = name or (f"{store.name}/{self.prefix}" if self.prefix else store.name)
        self.stats = SourceStats(self.name, "mirror")
        self.answered = False  # it gave at least one answer (even "not here") this run
        self.failures = 0

    def __repr__(self) -> str:
        return f"ContentMirror({self.name!r})"

    def repo(self, repo: str) -> str:
        """Where the source's *repo* lives on this mirror: ``library/python`` → ``PREFIX/library/python``."""
        return f"{self.prefix}/{repo}" if self.prefix else repo

    @property
    def live(self) -> bool:
        return self.stats.dropped is None


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

    def __repr__(self) -> str:
        return f"MirroredStore({self.source!r}, mirrors={[m.name for m in self.mirrors]!r})"

    @property
    def ratelimit(self) -> RateLimit | None:
        return self.source.ratelimit

    # -- bookkeeping ---------------------------------------------------------------------------------

    def _candidates(self, digest: str) -> list[tuple[int, ContentMirror]]:
        bad = self._bad.get(digest, set())
        return [(i, m) for i, m in enumerate(self.mirrors) if m.live and i not in bad]

    def _failed(self, i: int, m: ContentMirror, digest: str, e: BaseException, *, mismatch: bool = False) -> None:
        """Note that mirror *m* could not serve *digest*; drop it when it keeps failing (or never answered)."""
        self._bad.setdefault(digest, set()).add(i)
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

    def source_stats(self) -> list[SourceStats]:
        """The source (manifests it served, its pulls, blob bytes) and each mirror, in order of use."""
        return [_own_stats(self.source), *(m.stats for m in self.mirrors)]

    async def mirror_with(self, repo: str, digest: str) -> str | None:
        """The name of the first live mirror that holds manifest *digest* of *repo* (HEADs only), or None."""
        for i, m in self._candidates(digest):
            try:
                found = await m.store.head_manifest(m.repo(repo), digest)
            except Exception as e:  # a mirror never fails the caller
                self._failed(i, m, digest, e, mismatch=isinstance(e, DigestMismatch))
                continue
            m.answered = True
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
                there = await m.store.head_manifest(m.repo(repo), ref)
                m.answered = True
                if there is None:
                    continue
                manifest = await m.store.get_manifest(m.repo(repo), ref)
                if manifest.digest != ref:
                    raise DigestMismatch(f"{m.name}/{m.repo(repo)}@{ref}: got {manifest.digest}")
            except Exception as e:
                self._failed(i, m, ref, e, mismatch=isinstance(e, DigestMismatch))
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
        """From the first mirror that has the blob (HEAD first); else from the source. The caller verifies
        the bytes: when that fails while a mirror was serving, that mirror is not asked for this blob
        again, and the caller's next attempt reads it from the next mirror or the source."""
        async with contextlib.AsyncExitStack() as stack:
            chosen: tuple[int, ContentMirror] | None = None
            chunks: AsyncIterator[bytes] | None = None
            for i, m in self._candidates(desc.digest):
                try:
                    has = await m.store.has_blob(m.repo(repo), desc)
                    m.answered = True
                    if not has:
                        continue
                    chunks = await stack.enter_async_context(m.store.open_blob(m.repo(repo), desc))
                except Exception as e:
                    self._failed(i, m, desc.digest, e)
                    continue
                chosen = (i, m)
                break
            if chosen is None or chunks is None:
                chunks = await stack.enter_async_context(self.source.open_blob(repo, desc))
                yield chunks
                return
            i, m = chosen
            watch = _Watch(chunks, desc.size)
            try:
                yield watch.stream()
            except BaseException as e:
                if isinstance(e, asyncio.CancelledError | GeneratorExit | KeyboardInterrupt):
                    raise
                # Wrong bytes (the copier's check) or the mirror's own stream broke: never again from here.
                # A failure of the destination after the mirror's bytes all arrived is not the mirror's.
                wrong = _is_mismatch(e) or (watch.ended and watch.total != desc.size and desc.size >= 0)
                if wrong or watch.broken is not None:
                    self._failed(i, m, desc.digest, watch.broken or e, mismatch=wrong)
                raise
            if watch.ended:
                m.stats.blobs += 1
            m.stats.bytes += watch.total

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


class _Watch:
    """Passes a mirror's chunks through (no second hash: the copier verifies), noting how it ended."""

    def __init__(self, chunks: AsyncIterator[bytes], size: int) -> None:
        self.chunks = chunks
        self.size = size
        self.total = 0
        self.ended = False
        self.broken: BaseException | None = None

    async def stream(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self.chunks:
                self.total += len(chunk)
                yield chunk
        except (GeneratorExit, asyncio.CancelledError):
            raise
        except Exception as e:
            self.broken = e
            raise
        self.ended = True


def _is_mismatch(e: BaseException | None) -> bool:
    """True if *e*, or an exception it wraps, is a `DigestMismatch`."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, DigestMismatch):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


def _describe(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return text if len(text) <= 200 else text[:197] + "..."


__all__ = [
    "DEFAULT_CONTENT_MIRRORS",
    "MAX_FAILURES",
    "ContentMirror",
    "MirroredStore",
    "SourceStats",
    "content_mirrors_for",
    "counting_mirrored",
    "mirror_options",
    "source_stats",
    "split_mirror",
    "with_mirrors",
]
