"""The `Store` protocol (the counters every store keeps, `TransferStats`, and the `PullGate` live in
`hubmirror.transfer`, below the registry client)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from ..media import Descriptor, Manifest
from ..transfer import TransferStats

if TYPE_CHECKING:  # types only
    from ..registry.ratelimit import RateLimit

#: An open blob: an async context manager yielding an async iterator of byte chunks.
BlobStream = AbstractAsyncContextManager[AsyncIterator[bytes]]


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
