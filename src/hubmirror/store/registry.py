"""`RegistryStore`: the `Store` protocol over a registry's API (`hubmirror.registry.RegistryClient`)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from ..media import Descriptor, Manifest
from ..reference import api_host
from ..registry.client import RegistryClient
from ..registry.options import ClientOptions
from ..registry.ratelimit import RateLimit
from ..transfer import PullGate, TransferStats
from ._base import BlobStream


class RegistryStore:
    """Images in an OCI distribution registry (Docker Hub, Distribution, Harbor, …).

    *host* is a registry name (``docker.io``, ``registry.example:5000``); *options* say how to reach it
    (credentials, TLS, retries, pace; see `ClientOptions` and `RegistryClient` for scheme, TLS and
    credential rules), or *client* is the client to use. ``stats`` and ``ratelimit`` come from the client.
    *pull_gate* is asked before every manifest GET sent to this registry (the sync gives one to the Docker
    Hub source).
    """

    def __init__(
        self,
        host: str,
        options: ClientOptions | None = None,
        *,
        client: RegistryClient | None = None,
        pull_gate: PullGate | None = None,
    ) -> None:
        self.client = client or (options or ClientOptions()).client(host)
        if pull_gate is not None:
            self.client.pull_gate = pull_gate
        self.name: str = api_host(host)
        self.stats: TransferStats = self.client.stats

    def __repr__(self) -> str:
        return f"RegistryStore({self.name!r})"

    @property
    def ratelimit(self) -> RateLimit | None:
        return self.client.ratelimit

    async def head_manifest(self, repo: str, ref: str) -> Descriptor | None:
        return await self.client.head_manifest(repo, ref)

    async def get_manifest(self, repo: str, ref: str) -> Manifest:
        return await self.client.get_manifest(repo, ref)

    async def put_manifest(self, repo: str, ref: str, manifest: Manifest) -> None:
        await self.client.put_manifest(repo, ref, manifest)

    async def delete_manifest(self, repo: str, ref: str) -> None:
        await self.client.delete_manifest(repo, ref)

    async def has_blob(self, repo: str, desc: Descriptor) -> bool:
        return await self.client.head_blob(repo, desc.digest) is not None

    def open_blob(self, repo: str, desc: Descriptor) -> BlobStream:
        return self.client.open_blob(repo, desc.digest)

    def open_blob_at(
        self, repo: str, desc: Descriptor, offset: int, *, resumes: int | None = None, stall: float | None = None
    ) -> BlobStream:
        """The blob's bytes from *offset* on (a ``Range`` request); *resumes* and *stall* as
        `RegistryClient.open_blob` takes them (a content mirror's stream is not resumed on the same mirror)."""
        return self.client.open_blob(repo, desc.digest, offset=offset, resumes=resumes, stall=stall)

    async def put_blob(self, repo: str, desc: Descriptor, chunks: AsyncIterator[bytes]) -> None:
        """Monolithic streaming PUT when ``desc.size`` is known (> 0 or an empty blob), else chunked."""
        size = desc.size if desc.size >= 0 else None
        if size == 0 and desc.digest != _EMPTY_SHA256:
            size = None  # a descriptor without a size: length unknown
        await self.client.push_blob(repo, desc.digest, chunks, size)

    async def mount_blob(self, repo: str, desc: Descriptor, from_repo: str) -> bool:
        return await self.client.mount_blob(repo, desc.digest, from_repo)

    async def list_tags(self, repo: str) -> list[str]:
        return await self.client.list_tags(repo)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.client.close()


_EMPTY_SHA256 = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
