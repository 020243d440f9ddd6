"""A destination that keeps failing stops the run's pulls (issue 14, item 11).

With a full disk under an OCI layout, a registry answering 507 or 500 to every upload, or credentials it
refuses, every work item still fetched its manifests (Docker Hub pulls) before its first write failed: a
run spent its quota and stored nothing, and the next run spent it again. `DestinationWatch` stands between
the copier and the destination store and tells the `DestinationBreaker` of every failure there; once the
destination has failed the same way (`failure_kind`) `FAILURE_LIMIT` times in a row, the breaker trips:
the runner starts no more items and the pull budget refuses every further GET, even to items in flight.
"""

from __future__ import annotations

import errno
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiohttp

from .._errors import AuthError, DigestMismatch, NotFound, RegistryError, StoreError
from ..media import Descriptor, Manifest
from ..registry.ratelimit import RateLimit
from ..store import Store, TransferStats
from ..store._base import BlobStream

#: Failures of the same kind in a row that stop the run's pulls.
FAILURE_LIMIT = 3

#: OS errors that say the destination's filesystem cannot take writes (the same for every item).
_FS_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.EFBIG, errno.ENOTDIR}
)


def failure_kind(e: BaseException) -> str | None:
    """What kind of destination failure *e* is, for "the same way" (None: one that says nothing about the
    destination as a whole: a missing manifest, content that does not match, a refused manifest)."""
    if isinstance(e, NotFound | DigestMismatch):
        return None
    if isinstance(e, AuthError):
        return f"auth {e.status}"
    if isinstance(e, RegistryError):
        if e.status is None:
            return "unreachable"
        return f"HTTP {e.status}" if e.status >= 500 or e.status in (401, 403, 413, 429) else None
    os_error = e if isinstance(e, OSError) else None
    if isinstance(e, StoreError):  # an OCI layout names the path; the OS error is its context
        ctx = e.__cause__ or e.__context__
        os_error = ctx if isinstance(ctx, OSError) else None
    if isinstance(e, aiohttp.ClientError | TimeoutError):
        return "unreachable"
    if os_error is not None and os_error.errno in _FS_ERRNOS:
        return errno.errorcode.get(os_error.errno, str(os_error.errno))
    return None


@dataclass
class Tripped:
    """Why the breaker stopped the run's pulls."""

    kind: str
    first: str  # the first failure of that kind, as its error says
    failures: int


class DestinationBreaker:
    """Counts destination failures by kind; after `FAILURE_LIMIT` of one kind in a row it calls *on_trip*
    (once). A write that succeeds starts the count again."""

    def __init__(self, on_trip: Callable[[Tripped], None], limit: int = FAILURE_LIMIT) -> None:
        self.on_trip, self.limit = on_trip, limit
        self.tripped: Tripped | None = None
        self._kind: str | None = None
        self._count = 0
        self._first = ""

    def failed(self, e: BaseException) -> None:
        kind = failure_kind(e)
        if kind is None:
            return
        if kind != self._kind:
            self._kind, self._count, self._first = kind, 0, str(e) or type(e).__name__
        self._count += 1
        if self.tripped is None and self._count >= self.limit:
            self.tripped = Tripped(kind, self._first, self._count)
            self.on_trip(self.tripped)

    def wrote(self) -> None:
        self._kind, self._count = None, 0


class DestinationWatch:
    """The destination store as the copier sees it: every call passed on, every failure told to *breaker*
    (a blob upload that failed because its source stream failed is the source's, not counted)."""

    def __init__(self, store: Store, breaker: DestinationBreaker) -> None:
        self.store, self.breaker = store, breaker
        self.name = store.name
        self.stats: TransferStats = store.stats  # the same counters: the report reads the store's

    @property
    def ratelimit(self) -> RateLimit | None:
        return self.store.ratelimit

    async def head_manifest(self, repo: str, ref: str) -> Descriptor | None:
        try:
            return await self.store.head_manifest(repo, ref)
        except Exception as e:
            self.breaker.failed(e)
            raise

    async def get_manifest(self, repo: str, ref: str) -> Manifest:
        try:
            return await self.store.get_manifest(repo, ref)
        except Exception as e:
            self.breaker.failed(e)
            raise

    async def put_manifest(self, repo: str, ref: str, manifest: Manifest) -> None:
        try:
            await self.store.put_manifest(repo, ref, manifest)
        except Exception as e:
            self.breaker.failed(e)
            raise
        self.breaker.wrote()

    async def delete_manifest(self, repo: str, ref: str) -> None:
        await self.store.delete_manifest(repo, ref)

    async def has_blob(self, repo: str, desc: Descriptor) -> bool:
        try:
            return await self.store.has_blob(repo, desc)
        except Exception as e:
            self.breaker.failed(e)
            raise

    def open_blob(self, repo: str, desc: Descriptor) -> BlobStream:
        return self.store.open_blob(repo, desc)

    async def put_blob(self, repo: str, desc: Descriptor, chunks: AsyncIterator[bytes]) -> None:
        source_failed: list[BaseException] = []

        async def watched() -> AsyncIterator[bytes]:
            it = aiter(chunks)
            while True:
                try:
                    chunk = await anext(it)
                except StopAsyncIteration:
                    return
                except BaseException as e:  # the source's stream failed (not the destination giving up on it)
                    source_failed.append(e)
                    raise
                yield chunk

        try:
            await self.store.put_blob(repo, desc, watched())
        except Exception as e:
            if not source_failed:
                self.breaker.failed(e)
            raise
        self.breaker.wrote()

    async def mount_blob(self, repo: str, desc: Descriptor, from_repo: str) -> bool:
        try:
            return await self.store.mount_blob(repo, desc, from_repo)
        except Exception as e:
            self.breaker.failed(e)
            raise

    async def list_tags(self, repo: str) -> list[str]:
        return await self.store.list_tags(repo)

    async def close(self) -> None:
        return None  # the destination is the sync's to close


__all__ = ["FAILURE_LIMIT", "DestinationBreaker", "DestinationWatch", "Tripped", "failure_kind"]
