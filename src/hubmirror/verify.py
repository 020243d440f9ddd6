"""``hubmirror verify``: read back from the destination what the state says is mirrored, and with ``repair``
copy back what is missing or wrong.

For every tag the state records under the destination: the tag's digest (a HEAD), the manifest by digest
(a GET on the destination, verified against its digest), an index's children by digest, every image's config
and layers by HEAD (foreign layers are not stored, so not checked), and with ``deep`` every blob downloaded
and hashed. Each problem names the tag and the digest.

Repair reads from the source the state names (through its content mirrors first, within the pull budget):
a missing tag or top manifest is copied again by digest (a filtered index is rebuilt with the recorded
platforms: the same bytes), a missing child by digest, a missing or corrupt blob streamed and verified.
A tag that now points at other content is left alone unless hubmirror created it. A registry that keeps a
corrupt blob under its digest (Distribution does, until garbage collection) is named: no upload replaces it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from ._errors import BudgetExhausted, DigestMismatch, HubmirrorError, NotFound, QuotaExceeded
from .config import SyncConfig
from .copy import Copier
from .digest import verified
from .media import Descriptor, Manifest
from .platform import Platform
from .reference import DOCKER_HUB, Reference
from .state import State, TagRecord
from .sync.stores import Destination, Sources, open_destination

log = logging.getLogger(__name__)

#: Tags verified at once (each walks its manifests and blobs; the destination is the only one asked).
CONCURRENCY = 8


@dataclass
class Problem:
    """Something the destination lacks or holds wrong, for one recorded tag."""

    tag: str  # the destination tag: ``HOST/mirror/python:3.12``
    digest: str  # the manifest or blob at fault
    what: str  # what is wrong, in a few words
    repaired: str | None = None  # after --repair: "repaired", or why not

    def line(self) -> str:
        text = f"{self.tag}: {self.what}: {self.digest}"
        return f"{text} ({self.repaired})" if self.repaired else text


@dataclass
class VerifyReport:
    """What `verify` looked at and found."""

    tags: int = 0
    manifests: int = 0
    blobs: int = 0
    bytes_hashed: int = 0
    problems: list[Problem] = field(default_factory=list)
    repaired: int = 0

    @property
    def exit_code(self) -> int:
        """0 when the destination holds everything (or repair restored it all), else 1."""
        return 1 if any(p.repaired != "repaired" for p in self.problems) else 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["exit_code"] = self.exit_code
        return d


class _Walker:
    """Walks what one destination holds for the recorded tags; each manifest and blob is looked at once."""

    def __init__(self, dest: Destination, *, deep: bool, report: VerifyReport) -> None:
        self.dest = dest
        self.deep = deep
        self.report = report
        self._seen: dict[tuple[str, str], list[tuple[str, str]]] = {}  # (repo, digest) → problems under it
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    async def tag(self, rec: TagRecord) -> list[Problem]:
        """The problems of one recorded tag (its own, and those of the content it points at)."""
        store, repo = self.dest.store, self.dest.repo(rec.dest_repo)
        name = f"{rec.dest_repo}:{rec.tag}"
        out: list[Problem] = []
        head = await store.head_manifest(repo, rec.tag)
        if head is None:
            out.append(Problem(name, rec.dest_digest, "tag missing"))
        elif head.digest != rec.dest_digest:
            out.append(Problem(name, head.digest, f"tag points at other content than recorded ({rec.dest_digest})"))
        out += [Problem(name, d, what) for d, what in await self.manifest(repo, rec.dest_digest, top=True)]
        return out

    async def manifest(self, repo: str, digest: str, *, top: bool = False) -> list[tuple[str, str]]:
        """(digest, what) for everything wrong under manifest *digest* of *repo* (looked at once per run)."""
        key = (repo, digest)
        async with self._locks.setdefault(key, asyncio.Lock()):
            if key not in self._seen:
                self._seen[key] = await self._manifest(repo, digest, top)
            return self._seen[key]

    async def _manifest(self, repo: str, digest: str, top: bool) -> list[tuple[str, str]]:
        store = self.dest.store
        try:
            m = await store.get_manifest(repo, digest)
        except NotFound:
            return [(digest, "manifest missing" if top else "child manifest missing")]
        except DigestMismatch:
            return [(digest, "manifest does not match its digest")]
        self.report.manifests += 1
        found: list[tuple[str, str]] = []
        if m.is_index:
            for child in m.children:
                found += await self.manifest(repo, child.digest)
            return found
        for desc in m.blobs:
            if desc.is_foreign:
                continue
            found += await self.blob(repo, desc)
        return found

    async def blob(self, repo: str, desc: Descriptor) -> list[tuple[str, str]]:
        key = (repo, desc.digest)
        async with self._locks.setdefault(key, asyncio.Lock()):
            if key not in self._seen:
                self._seen[key] = await self._blob(repo, desc)
            return self._seen[key]

    async def _blob(self, repo: str, desc: Descriptor) -> list[tuple[str, str]]:
        store = self.dest.store
        self.report.blobs += 1
        if not await store.has_blob(repo, desc):
            return [(desc.digest, "blob missing")]
        if not self.deep:
            return []
        try:
            async with store.open_blob(repo, desc) as chunks:
                async for chunk in verified(chunks, desc.digest, desc.size if desc.size >= 0 else None):
                    self.report.bytes_hashed += len(chunk)
        except DigestMismatch:
            return [(desc.digest, "blob corrupt (its bytes do not match the digest)")]
        except NotFound:
            return [(desc.digest, "blob missing")]
        return []

    def forget(self, repo: str) -> None:
        """Look again at everything of *repo* (after a repair)."""
        for key in [k for k in self._seen if k[0] == repo]:
            del self._seen[key]


async def verify(
    cfg: SyncConfig,
    *,
    deep: bool = False,
    repair: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> VerifyReport:
    """Verify (and with *repair* restore) what the state of *cfg* says its destination holds."""
    report = VerifyReport()
    dest = open_destination(cfg)
    sources = Sources(cfg) if repair else None
    state = await asyncio.to_thread(State.open, cfg.state)
    try:
        records = [r for r in await state.aio.tags(prefix=dest.prefix) if r.dest_digest]
        report.tags = len(records)
        walker = _Walker(dest, deep=deep, report=report)
        sem = asyncio.Semaphore(CONCURRENCY)
        done = 0

        async def one(rec: TagRecord) -> tuple[TagRecord, list[Problem]]:
            nonlocal done
            async with sem:
                found = await walker.tag(rec)
            done += 1
            if progress is not None:
                progress(done, len(records))
            return rec, found

        results = await asyncio.gather(*(one(r) for r in records))
        broken = [(rec, found) for rec, found in results if found]
        if repair and broken:
            assert sources is not None
            await _repair(cfg, broken, dest=dest, sources=sources, walker=walker, report=report)
        for _, found in broken:
            report.problems += found
        report.repaired = sum(1 for p in report.problems if p.repaired == "repaired")
        return report
    finally:
        state.close()
        if sources is not None:
            await sources.close()
        await dest.store.close()


async def _repair(
    cfg: SyncConfig,
    broken: list[tuple[TagRecord, list[Problem]]],
    *,
    dest: Destination,
    sources: Sources,
    walker: _Walker,
    report: VerifyReport,
) -> None:
    """Copy back what each broken tag lacks, one tag at a time (a budget error stops the rest)."""
    copiers: dict[str, Copier] = {}
    stopped: str | None = None
    for rec, found in broken:
        if stopped is not None:
            _mark(found, f"not repaired: {stopped}")
            continue
        moved = [p for p in found if p.what.startswith("tag points at other content")]
        if moved and not rec.created_by_hubmirror:
            _mark(found, "not repaired: hubmirror did not create this tag; `sync --overwrite` replaces it")
            continue
        try:
            ref = Reference.parse(rec.source_ref)
        except HubmirrorError as e:
            _mark(found, f"not repaired: the recorded source {rec.source_ref!r} is not a reference ({e})")
            continue
        registry = cfg.source if ref.registry == DOCKER_HUB else ref.registry
        copier = copiers.get(registry)
        if copier is None:
            copier = copiers[registry] = Copier(sources[registry], dest.store, concurrency=cfg.blob_concurrency)
        repo = dest.repo(rec.dest_repo)
        try:
            await _restore(copier, rec, ref.repository, repo, found)
        except (BudgetExhausted, QuotaExceeded) as e:
            stopped = f"the pull budget is spent ({e}); run verify --repair again later"
            _mark(found, f"not repaired: {stopped}")
            continue
        except HubmirrorError as e:
            _mark(found, f"not repaired: {e}")
            continue
        walker.forget(repo)
        again = await walker.tag(rec)
        left = {(p.digest, p.what) for p in again}
        still_moved = any(q.what.startswith("tag points at") for q in again)
        for p in found:
            moved_tag = p.what.startswith("tag points at")
            if (not still_moved) if moved_tag else (p.digest, p.what) not in left:
                p.repaired = "repaired"
            elif p.what.startswith("blob corrupt"):
                p.repaired = (
                    "not repaired: the registry keeps the corrupt blob under its digest (Distribution does until "
                    "garbage collection: run its garbage-collect, then verify --repair again)"
                )
            else:
                p.repaired = "not repaired: still wrong after the copy"


def _mark(found: list[Problem], why: str) -> None:
    for p in found:
        p.repaired = why


async def _restore(copier: Copier, rec: TagRecord, src_repo: str, repo: str, found: list[Problem]) -> None:
    """Copy back what *found* names for *rec*: the tag with its top manifest, missing children by digest,
    missing or corrupt blobs streamed from the source and verified."""
    platforms = tuple(Platform.parse(p) for p in rec.platforms.split(",")) if rec.platforms else None
    top_missing = any(p.what in ("tag missing", "manifest missing") or p.what.startswith("tag points") for p in found)
    if top_missing:
        # The copier writes the top manifest (a filtered one rebuilt from the recorded platforms) and the tag.
        await copier.copy(src_repo, rec.upstream_digest, repo, [rec.tag], platforms=platforms)
    for p in found:
        if p.what == "child manifest missing":
            await copier.copy(src_repo, p.digest, repo, [], platforms=None)
    blobs = {p.digest for p in found if p.what.startswith("blob")}
    if blobs:
        for desc in await _blob_descriptors(copier, repo, rec.dest_digest, blobs):
            async with copier.src.open_blob(src_repo, desc) as chunks:
                await copier.dst.put_blob(repo, desc, verified(chunks, desc.digest, desc.size))


async def _blob_descriptors(copier: Copier, repo: str, digest: str, wanted: set[str]) -> list[Descriptor]:
    """The descriptors (with sizes and media types) of the *wanted* blobs under manifest *digest*."""
    out: dict[str, Descriptor] = {}

    async def walk(d: str) -> None:
        with contextlib.suppress(NotFound):
            m: Manifest = await copier.dst.get_manifest(repo, d)
            if m.is_index:
                for c in m.children:
                    await walk(c.digest)
                return
            for b in m.blobs:
                if b.digest in wanted:
                    out[b.digest] = b

    await walk(digest)
    return list(out.values())


__all__ = ["Problem", "VerifyReport", "verify"]
