"""The `Store` protocol and the counters every store keeps."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from ..media import Descriptor, Manifest

if TYPE_CHECKING:  # not at runtime: hubmirror.registry imports this module (TransferStats)
    from ..registry.ratelimit import RateLimit

#: An open blob: an async context manager yielding an async iterator of byte chunks.
BlobStream = AbstractAsyncContextManager[AsyncIterator[bytes]]


@dataclass
class TransferStats:
    """What a store was asked to do; the sync and `copy --json` report these."""

    manifest_gets: int = 0  # the requests Docker Hub counts as pulls
    manifest_heads: int = 0
    manifest_puts: int = 0
    blob_heads: int = 0
    blob_gets: int = 0
    blob_bytes_read: int = 0
    blob_uploads: int = 0
    blob_bytes_written: int = 0
    blob_mounts: int = 0
    retries: int = 0
    #: 429s that were not the pull quota (Docker Hub's abuse limit on all requests), each backed off and
    #: retried: more than a few mean the pace (``--hub-rate``) is too fast.
    abuse_backoffs: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class PullGate(Protocol):
    """Permission to send a manifest GET (a Docker Hub "pull"), asked right before the request goes out.

    A `RegistryStore` given a gate asks it before every manifest GET it sends (a HEAD that falls back
    to GET included, and each retry of one: every GET on the wire may be a pull);
    `hubmirror.budget.PullBudget` is the one the sync gives to the Docker Hub source.
    """

    async def acquire(self, n: int = 1) -> None:
        """Take *n* pulls (waiting if the gate allows), or raise `hubmirror.BudgetExhausted`."""
        ...


@runtime_checkable
class Store(Protocol):
    """A place images live: a registry, or an OCI layout directory.

    *repo* is a repository path inside the store (``library/python``); an OCI layout opened on one
    directory uses ``""``. *ref* is a tag or a ``sha256:`` digest. Every method is safe to call
    concurrently.
    """

    #: A human-readable location, e.g. ``registry-1.docker.io`` or ``oci:/srv/mirror``.
    name: str
    stats: TransferStats

    @property
    def ratelimit(self) -> RateLimit | None:
        """The pull quota from the latest manifest response; None if the store reports none."""
        ...

    async def head_manifest(self, repo: str, ref: str) -> Descriptor | None:
        """Digest, media type and size of *ref*, or None if absent. Free on Docker Hub."""
        ...

    async def get_manifest(self, repo: str, ref: str) -> Manifest:
        """The exact bytes of *ref*, verified against its digest. Raises `NotFound`."""
        ...

    async def put_manifest(self, repo: str, ref: str, manifest: Manifest) -> None:
        """Store *manifest* under *ref* (a tag, or its own digest). Its blobs and children must exist."""
        ...

    async def delete_manifest(self, repo: str, ref: str) -> None:
        """Delete a tag or a digest, where the store allows it (registries may refuse)."""
        ...

    async def has_blob(self, repo: str, desc: Descriptor) -> bool:
        """True if *repo* already has the blob."""
        ...

    def open_blob(self, repo: str, desc: Descriptor) -> BlobStream:
        """Stream the blob's bytes. The stream is not verified here; the copier verifies it."""
        ...

    async def put_blob(self, repo: str, desc: Descriptor, chunks: AsyncIterator[bytes]) -> None:
        """Store a blob from a stream. Nothing is committed unless the stream ends without error."""
        ...

    async def mount_blob(self, repo: str, desc: Descriptor, from_repo: str) -> bool:
        """Make a blob stored in *from_repo* (same store) available in *repo*; False if refused."""
        ...

    async def list_tags(self, repo: str) -> list[str]:
        """All tags of *repo* (every page); empty if the repository does not exist."""
        ...

    async def close(self) -> None:
        """Release connections and files."""
        ...
