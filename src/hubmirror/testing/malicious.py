"""A malicious registry: the Hub emulator in front of a real registry, lying on purpose where told to.

`MaliciousRegistry` serves what its upstream ``docker-registry`` holds, with Hub's token auth and its
blob redirect to a second "CDN" port (another host: no ``Authorization`` may follow the client there;
`cdn_saw_authorization` says whether one did), and on top of that, per repository, tag or digest:

- manifests: other bytes under a tag or a digest (a wrong digest, or descriptors with invalid
  digests), no ``Docker-Content-Digest`` on GETs, or a manifest over the 4 MiB cap;
- blobs: wrong bytes (one flipped), a body that never ends, one cut off midway (the connection is
  closed, and every ``Range`` resume is cut off too), a short one with a matching length, one that
  stalls midway (half is sent, then nothing, the connection left open; a ``Range`` resume is served), or
  one that crawls (`crawl_speed` bytes a second, ``Range`` resumes too) — per digest, or for every blob
  (`all_blobs_fault`: a content mirror that stalls or crawls on everything);
- tag lists: an endless ``Link`` chain of ever-new URLs, or a ``Link`` back to the first page.

Counters (`records`, `count`) come from the emulator. Use it as a source or, with ``allow_push`` and a
user, as a destination.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from typing import Any, Literal

from aiohttp import web

from .hub import HubEmulator, _classify, _drop
from .registry import Registry

BlobFault = Literal["flip", "endless", "truncate", "short", "stall", "crawl"]
TagFault = Literal["chain", "loop"]

#: Bytes an endless blob sends at most before the server gives up (a client that never stops is a bug
#: the test sees as a timeout, not a full disk).
ENDLESS_LIMIT = 256 * 1024 * 1024
_ENDLESS_CHUNK = b"\0" * (256 * 1024)
#: Seconds a stalled blob stays silent at most (a client that never gives up shows as a test timeout).
STALL_LIMIT = 120
#: Bytes a second a crawling blob is sent at (unless `MaliciousRegistry.set_crawl_speed` says), in 4 pieces
#: a second, for `STALL_LIMIT` seconds at most.
CRAWL_SPEED = 1024


class MaliciousRegistry(HubEmulator):
    """The Hub emulator (rate limit off by default) with the lies above switched on per item."""

    def __init__(
        self,
        upstream: Registry,
        *,
        users: Mapping[str, str] | None = None,
        allow_push: bool = False,
        limit: int | None = None,
        cdn_hostname: str = "127.0.0.1",
    ) -> None:
        super().__init__(upstream, users=users, allow_push=allow_push, limit=limit)
        self._cdn_hostname = cdn_hostname
        self._manifests: dict[tuple[str, str], tuple[bytes, str, str | None, frozenset[str]]] = {}
        self._no_digest_header = False
        self._blob_faults: dict[str, BlobFault] = {}
        self._all_blobs: BlobFault | None = None
        self._crawl_speed = CRAWL_SPEED
        self._tag_faults: dict[str, TagFault] = {}
        self.endless_bytes_sent = 0
        self._paths: list[str] = []

    @property
    def cdn_host(self) -> str:
        return f"{self._cdn_hostname}:{self._cdn_port}"

    # -- the lies --------------------------------------------------------------------------------

    def serve_manifest(
        self,
        repo: str,
        ref: str,
        data: bytes,
        media_type: str,
        *,
        digest_header: str | None = None,
        methods: tuple[str, ...] = ("GET", "HEAD"),
    ) -> None:
        """Answer *methods* on manifest *ref* of *repo* with *data* (and *digest_header*, if any)."""
        with self._lock:
            self._manifests[(repo, ref)] = (data, media_type, digest_header, frozenset(methods))

    def oversized_manifest(self, repo: str, ref: str, size: int = 5 * 1024 * 1024) -> None:
        """Answer manifest *ref* with *size* bytes of JSON (over the 4 MiB cap by default)."""
        pad = size - len(b'{"schemaVersion":2,"pad":""}')
        body = b'{"schemaVersion":2,"pad":"' + b"x" * pad + b'"}'
        self.serve_manifest(repo, ref, body, "application/vnd.oci.image.manifest.v1+json", methods=("GET",))

    def omit_digest_header(self, omit: bool = True) -> None:
        """Send manifest GETs without ``Docker-Content-Digest`` (HEADs keep it)."""
        with self._lock:
            self._no_digest_header = omit

    def blob_fault(self, digest: str, fault: BlobFault | None) -> None:
        """Serve blob *digest* with *fault* from the registry port (no redirect); None: serve it right."""
        with self._lock:
            if fault is None:
                self._blob_faults.pop(digest, None)
            else:
                self._blob_faults[digest] = fault

    def all_blobs_fault(self, fault: BlobFault | None) -> None:
        """Serve every blob without a fault of its own with *fault* (None: serve them right)."""
        with self._lock:
            self._all_blobs = fault

    def set_crawl_speed(self, bytes_per_second: int) -> None:
        """How fast a ``crawl`` blob is sent."""
        with self._lock:
            self._crawl_speed = max(4, bytes_per_second)

    def tag_fault(self, repo: str, fault: TagFault | None) -> None:
        """Page the tag list of *repo* into an endless chain (``chain``) or back to its start (``loop``)."""
        with self._lock:
            if fault is None:
                self._tag_faults.pop(repo, None)
            else:
                self._tag_faults[repo] = fault

    @property
    def paths(self) -> list[str]:
        """The path and query of every request on the registry port, in arrival order (a copy)."""
        with self._lock:
            return list(self._paths)

    def tag_list_pages(self, repo: str) -> int:
        """Tag-list requests for *repo* answered so far."""
        return self._count("GET", "tag-list", repo)

    # -- serving ---------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            self._paths.append(request.raw_path)
        return await super()._handle(request)

    def _token(self, request: web.Request) -> tuple[web.StreamResponse, str | None]:
        # As a destination it must let prune delete: a ``delete`` scope is granted like a push.
        scopes = [s.replace(",delete", "").replace(":delete", ":pull,push") for s in request.query.getall("scope", [])]
        query = [(k, v) for k, v in request.query.items() if k != "scope"] + [("scope", s) for s in scopes]
        return super()._token(request.clone(rel_url=request.rel_url.with_query(query)))

    async def _forward(self, request: web.Request) -> tuple[int, dict[str, str], bytes]:
        kind, repo, ref = _classify(request.path)
        with self._lock:
            crafted = self._manifests.get((repo, ref)) if kind == "manifest" else None
            no_digest = self._no_digest_header
            tag_fault = self._tag_faults.get(repo) if kind == "tag-list" else None
        if crafted is not None and request.method in crafted[3]:
            data, media_type, digest, _ = crafted
            headers = {"Content-Type": media_type}
            if digest is not None:
                headers["Docker-Content-Digest"] = digest
            if request.method == "HEAD":
                headers["Content-Length"] = str(len(data))
                return 200, headers, b""
            return 200, headers, data
        if tag_fault is not None:
            return await self._tag_page(request, repo, tag_fault)
        status, headers, body = await super()._forward(request)
        if kind == "manifest" and request.method == "GET" and no_digest:
            headers.pop("Docker-Content-Digest", None)
        return status, headers, body

    async def _tag_page(self, request: web.Request, repo: str, fault: TagFault) -> tuple[int, dict[str, str], bytes]:
        last = request.query.get("last")
        first = f"/v2/{repo}/tags/list"
        if last is None:
            status, headers, body = await super()._forward(request)
            headers.pop("Link", None)
            headers["Link"] = f'<{first}?n=1&last=~0>; rel="next"'
            return status, headers, body
        n = int(last.lstrip("~") or 0) if last.lstrip("~").isdigit() else 0
        if fault == "chain":  # a new page, a new tag and a new URL, forever
            page: dict[str, Any] = {"name": repo, "tags": [f"zz-{n}"]}
            link = f'<{first}?n=1&last=~{n + 1}>; rel="next"'
        else:  # back to the first page
            page = {"name": repo, "tags": []}
            link = f'<{first}>; rel="next"'
        return 200, {"Content-Type": "application/json", "Link": link}, json.dumps(page).encode()

    async def _blob_redirect(self, request: web.Request, repo: str, digest: str) -> web.StreamResponse:
        with self._lock:
            fault = self._blob_faults.get(digest, self._all_blobs)
            crawl_speed = self._crawl_speed
        if fault is None:
            return await super()._blob_redirect(request, repo, digest)
        if fault == "endless":
            return await self._endless(request)
        assert self._session is not None
        async with self._session.get(f"{self.upstream.url}/v2/{repo}/blobs/{digest}") as up:
            if up.status != 200:
                return web.Response(status=up.status, body=await up.read())
            data = await up.read()
        headers = {"Content-Type": "application/octet-stream"}
        if fault == "flip":
            i = len(data) // 2
            return web.Response(body=data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :], headers=headers)
        if fault == "short":
            return web.Response(body=data[: len(data) // 2], headers=headers)
        if fault == "crawl":
            return await self._crawl(request, data, headers, crawl_speed)
        # truncate: promise every byte (or the rest, for a Range resume), send half of it, hang up
        # stall: the same, but the connection stays open, silent (until the client gives up); a resume is served
        start = _range_start(request.headers.get("Range"))
        if fault == "stall" and start is not None:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            return web.Response(status=206, body=data[start:], headers=headers)
        status = 206 if start is not None else 200
        if start is not None:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        rest = data[start or 0 :]
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = len(rest)
        await resp.prepare(request)
        await resp.write(rest[: max(1, len(rest) // 2)])
        if fault == "stall":
            with contextlib.suppress(ConnectionError, OSError):
                for _ in range(STALL_LIMIT):
                    if request.transport is None or request.transport.is_closing():
                        break  # the client gave up on it: what it should do
                    await asyncio.sleep(1)
        _drop(request, reset=False)
        return resp

    async def _crawl(
        self, request: web.Request, data: bytes, headers: dict[str, str], speed: int
    ) -> web.StreamResponse:
        """*data* (or the rest of it, for a Range request) at *speed* bytes a second, until the client hangs up."""
        start = _range_start(request.headers.get("Range"))
        if start is not None:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        rest = data[start or 0 :]
        resp = web.StreamResponse(status=206 if start is not None else 200, headers=headers)
        resp.content_length = len(rest)
        await resp.prepare(request)
        piece = max(1, speed // 4)
        sent = 0
        with contextlib.suppress(ConnectionError, OSError):
            for _ in range(STALL_LIMIT * 4):
                if sent >= len(rest) or request.transport is None or request.transport.is_closing():
                    break
                await resp.write(rest[sent : sent + piece])
                sent += piece
                await asyncio.sleep(0.25)
        if sent < len(rest):
            _drop(request, reset=False)
        return resp

    async def _endless(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        try:
            while self.endless_bytes_sent < ENDLESS_LIMIT:
                await resp.write(_ENDLESS_CHUNK)
                with self._lock:
                    self.endless_bytes_sent += len(_ENDLESS_CHUNK)
        except (ConnectionError, OSError):
            pass  # the client hung up: what it should do
        return resp


def _range_start(value: str | None) -> int | None:
    if not value or not value.startswith("bytes="):
        return None
    first = value[6:].split("-", 1)[0]
    return int(first) if first.isdigit() else None


__all__ = ["CRAWL_SPEED", "ENDLESS_LIMIT", "STALL_LIMIT", "BlobFault", "MaliciousRegistry", "TagFault"]
