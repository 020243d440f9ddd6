"""The copier: move one image (an index with its children, or a single manifest) from a store to another.

Indexes are copied byte for byte (attestations and unusual platforms included) unless a platform
filter drops children, in which case a new valid index is written and the result says so. Blobs are
streamed and verified, skipped when the destination has them, mounted when another repository of the
destination has them, and transferred at most once even when several copies need them at once (several
processes too, through a `BlobLedger`). Push order is blobs → child manifests by digest → tags, so a tag
never points at missing content.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, TypeVar

import aiohttp

from ._errors import (
    AuthError,
    BudgetExhausted,
    DigestMismatch,
    HubmirrorError,
    InvalidReference,
    ManifestTooLarge,
    NotFound,
    QuotaExceeded,
    RegistryError,
    StoreError,
    UnsupportedManifest,
)
from .digest import is_digest, verified, verify_bytes
from .media import ATTESTATION_REF_DIGEST, Descriptor, Manifest
from .platform import Platform
from .registry.tls import TLSSettings
from .store._base import Store

T = TypeVar("T")
BlobHow = Literal["copied", "skipped", "mounted"]
ManifestHow = Literal["copied", "skipped"]

#: Annotations a filtered index carries, so that a later copy can tell it is up to date without a GET.
SOURCE_DIGEST_ANNOTATION = "io.hubmirror.source.digest"
PLATFORMS_ANNOTATION = "io.hubmirror.platforms"

#: Attempts per blob transfer (a fresh source stream each time) and per source manifest GET.
BLOB_ATTEMPTS = 4
MANIFEST_ATTEMPTS = 3


class CopyEvents:
    """Progress callbacks; subclass and override the ones you need (all are no-ops here)."""

    def blob_start(self, desc: Descriptor) -> None:
        """A blob transfer begins (also called again on a retry)."""

    def blob_progress(self, desc: Descriptor, nbytes: int) -> None:
        """*nbytes* more bytes of *desc* went through."""

    def blob_done(self, desc: Descriptor, how: BlobHow) -> None:
        """The destination has *desc*: it was copied, skipped (already there) or mounted."""

    def manifest_done(self, desc: Descriptor, how: ManifestHow) -> None:
        """A child or top manifest was copied, or skipped because the destination had it."""

    def blobs_listed(self, descs: Sequence[Descriptor]) -> None:
        """An image manifest of the copy is known: these are its blobs (sizes included), about to be placed."""


class CopyJournal:
    """What one `Copier.copy` tells its caller about the manifests it reads and writes, and asks it before a
    pull (all no-ops here; the sync keeps them in its state). The copier knows nothing of where they go.

    * `tagging` is awaited before the PUT of each destination tag and `tagged` after it: a caller that
      records the first durably ("this tag is about to hold this digest") and turns it into the tag's
      record in the second never has a pushed tag it does not know of, wherever the process dies.
    * `kept` is asked before a source manifest is fetched by digest: bytes an earlier attempt fetched and
      kept (the copier verifies them against the digest) save the pull. `fetched` is told of every source
      manifest the copy read (fetched, kept or shared by another copy in flight), `stored` of every
      manifest the destination now holds (written, or found there): what was fetched and not stored is
      what a caller keeps for the next attempt.
    """

    async def tagging(self, repo: str, tag: str, manifest: Manifest) -> None:
        """*tag* of destination *repo* is about to be set to *manifest* (raise to stop the push)."""

    async def tagged(self, repo: str, tag: str, manifest: Manifest) -> None:
        """*tag* of destination *repo* now holds *manifest*."""

    async def kept(self, digest: str) -> Manifest | None:
        """The source manifest *digest* if an earlier attempt fetched and kept it, else None."""
        return None

    def fetched(self, manifest: Manifest) -> None:
        """The copy read this source manifest (verified against its digest)."""

    def stored(self, digest: str) -> None:
        """The destination repository of the copy holds manifest *digest*."""


class BlobLedger(Protocol):
    """What several processes copying into one destination tell each other of its blobs (the sync's workers
    keep it in their shared state; the copier knows nothing of where). A `Copier` with a ledger asks it only
    when it knows of no repository of its own holding a blob: it mounts the blob from a repository another
    process placed it in, or claims its transfer, or waits while another process transfers it.

    Repositories are the destination store's names, as `Copier.copy` is given them.
    """

    async def holders(self, digest: str) -> set[str]:
        """Destination repositories the blob *digest* was placed in (by any process of the ledger)."""
        ...

    async def claim(self, digest: str, repo: str) -> bool:
        """Claim the transfer of *digest* into *repo*: True if this process is to transfer it; False while
        another transfer of it is under way (`wait`, then look again) or a repository holds it. A claim
        ends with `placed` or `release`, or runs out when its process dies."""
        ...

    async def wait(self, digest: str) -> None:
        """Return once no transfer of *digest* claimed by another is under way (done, given up, or dead)."""
        ...

    async def placed(self, digest: str, repo: str) -> None:
        """*repo* holds *digest* now (copied, mounted or found there); a claim of it for *repo* is over."""
        ...

    async def release(self, digest: str, repo: str) -> None:
        """The claimed transfer of *digest* into *repo* failed: the claim goes (another may try)."""
        ...


@dataclass
class CopyResult:
    """What one `Copier.copy` did."""

    source_digest: str  # the upstream (source) digest of the top manifest
    digest: str  # the destination digest (differs from source_digest only when filtered)
    media_type: str
    filtered: bool = False
    up_to_date: bool = False  # the destination already had it: no source GET was spent
    skipped: str | None = None  # why nothing was copied (platform not selected), else None
    tags: list[str] = field(default_factory=list)  # destination tags now pointing at `digest`
    tags_written: list[str] = field(default_factory=list)  # of those, the ones PUT by this copy
    platforms: list[str] = field(default_factory=list)  # platforms of the copied image(s)
    manifests_copied: int = 0
    manifests_skipped: int = 0
    blobs_copied: int = 0
    blobs_skipped: int = 0
    blobs_mounted: int = 0
    bytes_copied: int = 0
    foreign_layers: list[str] = field(default_factory=list)  # digests not downloaded (Windows)
    source_manifest_gets: int = 0
    source_manifest_heads: int = 0
    #: Per source of content (the source registry, each content mirror): what it served (`copy_location`).
    sources: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Ctx:
    """Counters of one copy call."""

    def __init__(
        self,
        src_repo: str,
        dst_repo: str,
        platforms: list[Platform] | None,
        events: CopyEvents,
        journal: CopyJournal | None = None,
    ) -> None:
        self.events = events  # this copy's progress callbacks
        self.src_repo = src_repo
        self.dst_repo = dst_repo
        self.platforms = platforms
        self.journal = journal or CopyJournal()
        self.fetches: set[asyncio.Task[Manifest]] = set()  # source GETs in flight
        self.result = CopyResult("", "", "")
        self.foreign: set[str] = set()


class Copier:
    """Copies images from *src* to *dst*. One Copier may run many `copy` calls concurrently."""

    def __init__(
        self,
        src: Store,
        dst: Store,
        *,
        concurrency: int = 8,
        platforms: Sequence[Platform] | None = None,
        events: CopyEvents | None = None,
        ledger: BlobLedger | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.src = src
        self.dst = dst
        self.platforms = list(platforms) if platforms else None
        self.events = events or CopyEvents()
        self.ledger = ledger  # blobs other processes placed or are transferring (None: this process alone)
        self._blob_sem = asyncio.Semaphore(concurrency)
        self._manifest_sem = asyncio.Semaphore(concurrency)
        self._inflight: dict[str, asyncio.Future[None]] = {}
        self._children_inflight: dict[tuple[str, str], asyncio.Future[None]] = {}
        self._known: dict[str, set[str]] = {}  # digest → destination repos known to hold it
        self._indexes: dict[tuple[str, str], Manifest] = {}  # (source repo, digest) → index fetched
        self._fetching: dict[tuple[str, str], asyncio.Future[None]] = {}

    # -- public ------------------------------------------------------------------------------------

    async def copy(
        self,
        src_repo: str,
        src_ref: str,
        dst_repo: str,
        tags: Sequence[str],
        *,
        manifest: Manifest | None = None,
        platforms: Sequence[Platform] | Literal["default"] | None = "default",
        source: Descriptor | None = None,
        dest_tags: Mapping[str, str] | None = None,
        events: CopyEvents | None = None,
        journal: CopyJournal | None = None,
    ) -> CopyResult:
        """Copy *src_ref* of *src_repo* into *dst_repo* and point *tags* at it.

        *manifest* is the top manifest when the caller already fetched it (saves a source GET).
        *platforms* overrides the Copier's platform selection for this copy (None: copy verbatim).
        *source* is what a HEAD of *src_ref* returned, when the caller already did it (saves a HEAD).
        *dest_tags* is what the destination's *tags* point at (absent ones left out), when the caller just
        HEADed them (saves a HEAD per tag).
        *events* receive this copy's progress (default: the Copier's).
        *journal* is told of each tag before and after its PUT, and of the manifests read and stored
        (`CopyJournal`).
        Raises `BudgetExhausted` or `QuotaExceeded` (no tag is written), `UnsupportedManifest`,
        `NotFound`, `RegistryError`, `DigestMismatch`, `StoreError`.
        """
        selected = self.platforms if platforms == "default" else (list(platforms) if platforms else None)
        ctx = _Ctx(src_repo, dst_repo, selected, events or self.events, journal)
        try:
            return await self._copy(ctx, src_ref, list(dict.fromkeys(tags)), manifest, source, dest_tags)
        finally:
            # A GET already sent is a pull spent: it is let finish even when the copy fails or is cancelled
            # meanwhile, and its manifest reaches the journal (to be kept for the next attempt).
            if ctx.fetches:
                await asyncio.wait(set(ctx.fetches))  # not gather: a cancel of this wait must not cancel them

    async def _copy(
        self,
        ctx: _Ctx,
        src_ref: str,
        tags: list[str],
        manifest: Manifest | None,
        source: Descriptor | None,
        dest_tags: Mapping[str, str] | None,
    ) -> CopyResult:
        res, src_repo, dst_repo = ctx.result, ctx.src_repo, ctx.dst_repo

        if manifest is not None:
            manifest.check_supported()
            src_digest = manifest.digest
            src_type = manifest.media_type
        else:
            head = source
            if head is None:
                res.source_manifest_heads += 1
                head = await self.src.head_manifest(src_repo, src_ref)
            if head is None:
                raise NotFound(f"{_loc(self.src, src_repo, src_ref)} not found", repository=src_repo)
            src_digest, src_type = head.digest, head.media_type
        res.source_digest = src_digest
        res.media_type = src_type

        # Up to date? Then only missing tags are (re)written; the source is not read.
        if dest_tags is not None:
            existing = {t: dest_tags[t] for t in tags if t in dest_tags}
        else:
            existing = await self._dst_tags(dst_repo, tags)
        done = await self._already_there(ctx, src_digest, existing)
        if done is not None:
            # An index whose children were deleted at the destination gets them back before a tag is put
            # on it: a tag never points at an index a client cannot pull.
            res.up_to_date = not await self._complete(ctx, done)
            res.digest = done.digest
            res.media_type = done.media_type
            res.filtered = done.digest != src_digest
            await self._put_tags(ctx, done, tags, existing)
            return res

        if manifest is None:
            # By the digest the HEAD returned, so the bytes are verified even when the registry's GET
            # carries no Docker-Content-Digest (and a tag moved in between cannot slip in). A destination
            # holding it by digest (a verbatim copy now being filtered) serves it without a pull.
            manifest = await self._held_by_dest(ctx, src_digest) or await self._get_source(ctx, src_digest)
            res.media_type = manifest.media_type
        top = manifest

        if top.is_index:
            top = await self._copy_index(ctx, top)
        else:
            reason = await self._check_image_platform(ctx, top)
            if reason is not None:
                res.skipped = reason
                res.digest = top.digest
                return res
            await self._copy_image(ctx, top)
        res.digest = top.digest
        res.filtered = top.digest != res.source_digest
        res.foreign_layers = sorted(ctx.foreign)
        if res.skipped is not None:
            return res
        if not tags:
            await self.dst.put_manifest(dst_repo, top.digest, top)
            ctx.journal.stored(top.digest)
        else:
            existing = {t: d for t, d in existing.items() if d == top.digest}
        await self._put_tags(ctx, top, tags, existing)
        ctx.events.manifest_done(top.descriptor(), "copied")
        res.manifests_copied += 1
        return res

    async def retag(self, dst_repo: str, manifest: Manifest, tags: Sequence[str]) -> list[str]:
        """PUT the same manifest bytes under more *tags* of *dst_repo*; the source is not touched.

        The manifest's content must already be in the destination. Returns the tags written.
        """
        written: list[str] = []
        for tag in dict.fromkeys(tags):
            await self.dst.put_manifest(dst_repo, tag, manifest)
            written.append(tag)
        return written

    # -- the top manifest --------------------------------------------------------------------------

    async def _dst_tags(self, dst_repo: str, tags: Sequence[str]) -> dict[str, str]:
        """Digest each destination tag points at now (absent tags left out)."""

        async def one(tag: str) -> tuple[str, str | None]:
            d = await self.dst.head_manifest(dst_repo, tag)
            return tag, d.digest if d else None

        pairs = await _gather(one(t) for t in tags)
        return {t: d for t, d in pairs if d is not None}

    async def _already_there(self, ctx: _Ctx, src_digest: str, existing: dict[str, str]) -> Manifest | None:
        """The destination manifest that already stands for *src_digest*, if any (no source access)."""
        dst, repo = self.dst, ctx.dst_repo
        if ctx.platforms is None:
            if src_digest in existing.values() or await dst.head_manifest(repo, src_digest) is not None:
                return await dst.get_manifest(repo, src_digest)
            return None
        # Filtered copies carry the upstream digest and the platform list in their annotations. The upstream
        # index itself stands for it only when the selection keeps every child (else it is filtered now).
        for digest in dict.fromkeys(existing.values()):
            try:
                m = await dst.get_manifest(repo, digest)
            except NotFound:
                continue
            if digest == src_digest:
                if self._keeps_all(ctx, m):
                    return m
                continue
            ann = m.json.get("annotations") if m.is_index else None
            if (
                isinstance(ann, dict)
                and ann.get(SOURCE_DIGEST_ANNOTATION) == src_digest
                and ann.get(PLATFORMS_ANNOTATION) == self._platform_text(ctx)
            ):
                return m
        if not existing and await dst.head_manifest(repo, src_digest) is not None:
            m = await dst.get_manifest(repo, src_digest)
            if self._keeps_all(ctx, m):
                return m
        return None

    async def _complete(self, ctx: _Ctx, top: Manifest) -> bool:
        """Copy the children of *top*, an index already at the destination, that the destination lacks
        (deleted behind hubmirror's back, or by an older prune); True if any was missing."""
        if not top.is_index:
            return False

        async def there(desc: Descriptor) -> bool:
            async with self._manifest_sem:
                return await self.dst.head_manifest(ctx.dst_repo, desc.digest) is not None

        children = [c for c in top.children if not c.is_foreign]
        found = await _gather(there(c) for c in children)
        missing = [c for c, ok in zip(children, found, strict=True) if not ok]
        if missing:
            await self._copy_children(ctx, missing)
        return bool(missing)

    async def _held_by_dest(self, ctx: _Ctx, src_digest: str) -> Manifest | None:
        """The source's top manifest when the destination holds it by digest (an earlier verbatim copy being
        filtered now): read there, verified against *src_digest*, it costs no pull."""
        if ctx.platforms is None or await self.dst.head_manifest(ctx.dst_repo, src_digest) is None:
            return None
        try:
            m = await self.dst.get_manifest(ctx.dst_repo, src_digest)
        except NotFound:
            return None
        return m if m.digest == src_digest else None

    async def _put_tags(self, ctx: _Ctx, top: Manifest, tags: Sequence[str], existing: dict[str, str]) -> None:
        """Point *tags* at *top* (those not already on it), each PUT between the journal's `tagging` and
        `tagged`."""
        res, journal = ctx.result, ctx.journal
        for tag in tags:
            if existing.get(tag) != top.digest:
                await journal.tagging(ctx.dst_repo, tag, top)
                await self.dst.put_manifest(ctx.dst_repo, tag, top)
                await journal.tagged(ctx.dst_repo, tag, top)
                res.tags_written.append(tag)
            res.tags.append(tag)
        if tags:
            journal.stored(top.digest)

    def _platform_text(self, ctx: _Ctx) -> str:
        return ",".join(str(p) for p in ctx.platforms or ())

    def _selected(self, ctx: _Ctx, platform: Platform | None) -> bool:
        return _platform_selected(ctx.platforms, platform)

    # -- indexes -----------------------------------------------------------------------------------

    async def _copy_index(self, ctx: _Ctx, index: Manifest) -> Manifest:
        """Copy the children of *index* (filtered when platforms are set); return the index to tag."""
        top = self._filter(ctx, index)
        if ctx.result.skipped is not None:
            return index
        children = top.children
        ctx.result.platforms = [str(c.platform) for c in children if c.platform and not c.is_attestation]
        await self._copy_children(ctx, children)
        return top

    async def _copy_children(self, ctx: _Ctx, children: Sequence[Descriptor]) -> None:
        """Copy *children* concurrently. One that cannot have its pull (budget spent, quota 429) does not
        cancel the others: every child already fetched is still pushed by digest, so no GET is wasted
        and the next run goes on from there. Then the budget error is raised."""
        stopped: list[BudgetExhausted | QuotaExceeded] = []

        async def one(desc: Descriptor) -> None:
            try:
                await self._copy_child(ctx, desc)
            except (BudgetExhausted, QuotaExceeded) as e:
                stopped.append(e)

        await _gather(one(c) for c in children)
        if stopped:
            raise stopped[0]

    def _kept(self, ctx: _Ctx, index: Manifest) -> tuple[list[int], set[str]]:
        """Positions of the children of *index* the selection keeps, and the digests of its kept images
        (an attestation goes with the image it describes)."""
        children = index.children
        keep = _kept_positions(children, ctx.platforms)
        return keep, {children[i].digest for i in keep if not children[i].is_attestation}

    def _keeps_all(self, ctx: _Ctx, manifest: Manifest) -> bool:
        """True if the selection keeps *manifest* as it is (every child of an index; any single image)."""
        if ctx.platforms is None or not manifest.is_index:
            return True
        return len(self._kept(ctx, manifest)[0]) == len(manifest.children)

    def _filter(self, ctx: _Ctx, index: Manifest) -> Manifest:
        """*index* itself when every child is selected, else a new index with the selected ones."""
        if ctx.platforms is None:
            return index
        raw = index.json.get("manifests") or []
        children = index.children
        keep, kept_images = self._kept(ctx, index)
        if len(keep) == len(children):
            return index
        if not kept_images:
            available = sorted({str(c.platform) for c in children if c.platform and not c.is_attestation})
            ctx.result.skipped = (
                f"no platform of {index.digest} matches {self._platform_text(ctx)} "
                f"(available: {', '.join(available) or 'none'})"
            )
            return index
        obj = dict(index.json)
        obj["manifests"] = [raw[i] for i in keep]
        annotations = dict(obj.get("annotations") or {})
        annotations[SOURCE_DIGEST_ANNOTATION] = index.digest
        annotations[PLATFORMS_ANNOTATION] = self._platform_text(ctx)
        obj["annotations"] = annotations
        data = json.dumps(obj, indent=3).encode()
        return Manifest(data, index.media_type)

    async def _copy_child(self, ctx: _Ctx, desc: Descriptor) -> None:
        """A child manifest by digest: skipped when the destination has it, else fetched and copied."""
        # A child shared by indexes in flight (a SharedTag index and its entries' index) is fetched once.
        key = (ctx.dst_repo, desc.digest)
        while (other := self._children_inflight.get(key)) is not None:
            await asyncio.shield(other)
        fut = asyncio.get_running_loop().create_future()
        self._children_inflight[key] = fut
        try:
            await self._copy_child_once(ctx, desc)
        finally:
            del self._children_inflight[key]
            fut.set_result(None)

    async def _copy_child_once(self, ctx: _Ctx, desc: Descriptor) -> None:
        res = ctx.result
        async with self._manifest_sem:
            there = await self.dst.head_manifest(ctx.dst_repo, desc.digest)
        if there is not None:
            res.manifests_skipped += 1
            ctx.journal.stored(desc.digest)
            ctx.events.manifest_done(desc, "skipped")
            return
        child = await self._get_source(ctx, desc.digest)
        if child.is_index:
            await self._copy_children(ctx, child.children)
        else:
            await self._copy_image(ctx, child)
        await self.dst.put_manifest(ctx.dst_repo, child.digest, child)
        ctx.journal.stored(child.digest)
        res.manifests_copied += 1
        ctx.events.manifest_done(desc, "copied")

    async def _get_source(self, ctx: _Ctx, ref: str) -> Manifest:
        """A source manifest. An index asked for by digest is fetched once per Copier: the same digest
        reached through two tag groups (an entry's and a SharedTag group's), or by two copies at once,
        costs one pull; `fetched_index` hands its bytes to the caller (to keep them across runs). A
        manifest the journal kept from an earlier attempt costs none."""
        if not is_digest(ref):
            return await self._get_source_once(ctx, ref)
        key = (ctx.src_repo, ref)
        while True:
            if (cached := self._indexes.get(key)) is not None:
                ctx.journal.fetched(cached)
                return cached
            fut = self._fetching.get(key)
            if fut is None:
                break
            await asyncio.shield(fut)  # another copy is fetching it; then look again
        fut = asyncio.get_running_loop().create_future()
        self._fetching[key] = fut
        try:
            # Shielded: cancelled meanwhile (a sibling failed), the GET still completes and is journalled.
            fetch = asyncio.ensure_future(self._fetch(ctx, ref))
            ctx.fetches.add(fetch)
            fetch.add_done_callback(_settled_fetch(ctx.fetches))
            m = await asyncio.shield(fetch)
            if m.is_index:
                self._indexes[key] = m
        finally:
            del self._fetching[key]
            fut.set_result(None)
        return m

    async def _fetch(self, ctx: _Ctx, digest: str) -> Manifest:
        """Source manifest *digest*: the journal's kept bytes, else a GET; told to the journal."""
        m = await self._kept_source(ctx, digest) or await self._get_source_once(ctx, digest)
        ctx.journal.fetched(m)
        return m

    async def _kept_source(self, ctx: _Ctx, digest: str) -> Manifest | None:
        """The journal's kept bytes of source manifest *digest*, if any and if they hash to it."""
        m = await ctx.journal.kept(digest)
        if m is None:
            return None
        try:
            verify_bytes(m.data, digest, f"kept manifest {digest}")
            m.check_supported()
        except (DigestMismatch, UnsupportedManifest):
            return None  # not what was asked for: fetch it
        return m

    def fetched_index(self, src_repo: str, digest: str) -> Manifest | None:
        """The index *digest* of *src_repo* if this Copier fetched it from the source (verified bytes)."""
        return self._indexes.get((src_repo, digest))

    async def _get_source_once(self, ctx: _Ctx, ref: str) -> Manifest:
        """GET a source manifest (a pull; the source store's `PullGate` is asked for it), transient errors
        retried, type checked."""
        for attempt in range(1, MANIFEST_ATTEMPTS + 1):
            ctx.result.source_manifest_gets += 1
            try:
                async with self._manifest_sem:
                    m = await self.src.get_manifest(ctx.src_repo, ref)
            except Exception as e:
                if attempt == MANIFEST_ATTEMPTS or not _transient(e):
                    raise
                continue
            if is_digest(ref):  # with the algorithm of *ref* (sha256 or sha512)
                verify_bytes(m.data, ref, f"manifest {_loc(self.src, ctx.src_repo, ref)} does not match its digest")
            m.check_supported()
            return m
        raise AssertionError("unreachable")

    # -- images and blobs --------------------------------------------------------------------------

    async def _check_image_platform(self, ctx: _Ctx, image: Manifest) -> str | None:
        """None if a single image manifest is selected, else the reason it is skipped."""
        cfg = image.config
        if cfg is None:
            return None
        if ctx.platforms is None:
            return None
        platform = await self._config_platform(ctx, cfg)
        if platform is not None:
            ctx.result.platforms = [str(platform)]
        if self._selected(ctx, platform):
            return None
        return f"image {image.digest} is for {platform or 'an unknown platform'}, not {self._platform_text(ctx)}"

    async def _config_platform(self, ctx: _Ctx, cfg: Descriptor) -> Platform | None:
        """The platform named by an image config (a blob GET on the source, not a pull)."""
        store, repo = self.src, ctx.src_repo
        if cfg.size > 1024 * 1024:
            return None
        data = b""
        what = f"config {cfg.digest} from {_where(store, repo)}"
        for attempt in range(1, BLOB_ATTEMPTS + 1):
            try:
                async with store.open_blob(repo, cfg) as chunks:
                    data = b"".join([c async for c in verified(chunks, cfg.digest, cfg.size, what)])
                break
            except Exception as e:
                if attempt == BLOB_ATTEMPTS or not _transient(e):
                    raise
        try:
            obj = json.loads(data)
        except ValueError:
            return None
        return Platform.from_json(obj) if isinstance(obj, dict) else None

    async def _copy_image(self, ctx: _Ctx, image: Manifest) -> None:
        """The blobs of an image manifest (foreign layers are left out and reported)."""
        blobs: list[Descriptor] = []
        seen: set[str] = set()
        for desc in image.blobs:
            if desc.is_foreign:
                ctx.foreign.add(desc.digest)
                continue
            if desc.digest not in seen:
                seen.add(desc.digest)
                blobs.append(desc)
        ctx.events.blobs_listed(blobs)
        await _gather(self._blob(ctx, d) for d in blobs)

    async def _blob(self, ctx: _Ctx, desc: Descriptor) -> None:
        """Make *desc* present in the destination repo: skip, mount, or transfer (once per digest)."""
        repo = ctx.dst_repo
        res = ctx.result
        while True:
            if repo in self._known.get(desc.digest, ()):
                res.blobs_skipped += 1
                ctx.events.blob_done(desc, "skipped")
                return
            fut = self._inflight.get(desc.digest)
            if fut is None:
                break
            await asyncio.shield(fut)  # another copy is moving this blob; then look again
        fut = asyncio.get_running_loop().create_future()
        self._inflight[desc.digest] = fut
        try:
            how = await self._place_blob(ctx, desc)
            self._known.setdefault(desc.digest, set()).add(repo)
        finally:
            del self._inflight[desc.digest]
            fut.set_result(None)
        if how == "copied":
            res.blobs_copied += 1
            res.bytes_copied += desc.size
        elif how == "mounted":
            res.blobs_mounted += 1
        else:
            res.blobs_skipped += 1
        ctx.events.blob_done(desc, how)

    async def _place_blob(self, ctx: _Ctx, desc: Descriptor) -> BlobHow:
        if self.ledger is not None:
            how = await self._place_blob_here(ctx, desc, self.ledger)
            await self.ledger.placed(desc.digest, ctx.dst_repo)
            return how
        return await self._place_blob_here(ctx, desc, None)

    async def _place_blob_here(self, ctx: _Ctx, desc: Descriptor, ledger: BlobLedger | None) -> BlobHow:
        repo = ctx.dst_repo
        if await self.dst.has_blob(repo, desc):
            return "skipped"
        others = sorted(self._known.get(desc.digest, set()) - {repo})
        for other in others:
            if await self._mount(repo, desc, other):
                return "mounted"
        if ledger is not None and not others:
            return await self._place_shared(ctx, desc, ledger)
        async with self._blob_sem:  # only transfers take a slot: HEADs and mounts are quick
            await self._transfer(ctx, desc)
        return "copied"

    async def _mount(self, repo: str, desc: Descriptor, other: str) -> bool:
        try:
            return await self.dst.mount_blob(repo, desc, other)
        except (RegistryError, StoreError):
            return False

    async def _place_shared(self, ctx: _Ctx, desc: Descriptor, ledger: BlobLedger) -> BlobHow:
        """No repository this Copier knows of holds *desc*: mount it from one another process placed it in;
        else transfer it under a claim, or wait while another process transfers it and then mount it."""
        repo, digest = ctx.dst_repo, desc.digest
        tried: set[str] = set()
        while True:
            if await ledger.claim(digest, repo):  # first: a blob no other repository needs costs one question
                try:
                    async with self._blob_sem:
                        await self._transfer(ctx, desc)
                except BaseException:
                    await shielded(ledger.release(digest, repo))
                    raise
                return "copied"
            for other in sorted(await ledger.holders(digest) - {repo} - tried):
                tried.add(other)
                if await self._mount(repo, desc, other):
                    return "mounted"
            if tried:  # held elsewhere, but the registry refuses the mount: a claim would save nothing
                break
            await ledger.wait(digest)  # another process transfers it: then look again
        async with self._blob_sem:
            await self._transfer(ctx, desc)
        return "copied"

    async def _transfer(self, ctx: _Ctx, desc: Descriptor) -> None:
        """Stream the blob from the source into the destination, verified; retried on errors.

        When the source stream fails (wrong bytes, too many or too few, a broken download), that error
        is raised, naming the source, rather than whatever the destination's upload made of the abort.
        """
        for attempt in range(1, BLOB_ATTEMPTS + 1):
            ctx.events.blob_start(desc)
            failed: list[Exception] = []
            try:
                async with self.src.open_blob(ctx.src_repo, desc) as chunks:
                    await self.dst.put_blob(ctx.dst_repo, desc, self._source(ctx, desc, chunks, failed))
                return
            except Exception as e:
                err = failed[0] if failed else e
                if attempt == BLOB_ATTEMPTS or not _transient(err):
                    if err is not e:
                        raise err from None
                    if isinstance(e, HubmirrorError):
                        raise
                    raise RegistryError(f"blob {desc.digest} of {ctx.src_repo}: {type(e).__name__}: {e}") from e

    async def _source(
        self, ctx: _Ctx, desc: Descriptor, chunks: AsyncIterator[bytes], failed: list[Exception]
    ) -> AsyncIterator[bytes]:
        """The source side of a transfer: verified, progress reported, its failure kept in *failed*."""
        what = f"blob {desc.digest} from {_where(self.src, ctx.src_repo)}"
        progress = ctx.events.blob_progress
        try:
            async for chunk in verified(chunks, desc.digest, desc.size, what):
                progress(desc, len(chunk))
                yield chunk
        except Exception as e:
            failed.append(e)
            raise


def _settled_fetch(fetches: set[asyncio.Task[Manifest]]) -> Callable[[asyncio.Task[Manifest]], None]:
    """A done-callback: the fetch leaves *fetches*, its error retrieved (whoever awaited it may be gone)."""

    def done(task: asyncio.Task[Manifest]) -> None:
        fetches.discard(task)
        if not task.cancelled():
            task.exception()

    return done


def _platform_selected(platforms: Sequence[Platform] | None, platform: Platform | None) -> bool:
    if platforms is None:
        return True
    return platform is not None and any(platform.matches(p) for p in platforms)


def _kept_positions(children: Sequence[Descriptor], platforms: Sequence[Platform] | None) -> list[int]:
    """Positions of the children a copy of an index keeps: the selected platforms' images and their
    attestation manifests."""
    kept_images = {c.digest for c in children if not c.is_attestation and _platform_selected(platforms, c.platform)}
    return [
        i
        for i, c in enumerate(children)
        if (c.digest in kept_images and not c.is_attestation)
        or (c.is_attestation and c.annotations.get(ATTESTATION_REF_DIGEST) in kept_images)
    ]


def selected_children(index: Manifest, platforms: Sequence[Platform] | None) -> list[Descriptor]:
    """The child manifests of *index* a copy with *platforms* (None: all) fetches."""
    children = index.children
    return [children[i] for i in _kept_positions(children, platforms)]


async def copy_location(
    src: str,
    dst: str,
    *,
    platforms: Sequence[Platform] | None = None,
    extra_tags: Sequence[str] = (),
    authfile: str | None = None,
    insecure: Sequence[str] = (),
    tls: Mapping[str, TLSSettings] | None = None,
    concurrency: int = 8,
    events: CopyEvents | None = None,
    content_mirrors: Sequence[str] | None = None,
) -> CopyResult:
    """Copy the image at location *src* to location *dst* (what ``hubmirror copy`` does).

    Locations are image references or ``oci:PATH[:TAG]``. The destination tags are *dst*'s tag (or,
    when it names none, the source's tag) plus *extra_tags*. *tls* holds TLS settings per registry
    (``""``: every registry without its own entry). *content_mirrors* (``REGISTRY[/PREFIX]``) serve the
    source's content by digest; None: the defaults when the source is Docker Hub; ``[]``: none.
    """
    from .store._open import open_location, open_registry
    from .store.mirrored import content_mirrors_for, source_stats, with_mirrors

    src_store, src_repo, src_ref = open_location(src, authfile=authfile, insecure=insecure, tls=tls)
    if not src.startswith("oci:"):
        src_store = with_mirrors(
            src_store,
            content_mirrors_for(src_store.name, content_mirrors),
            lambda host: open_registry(host, authfile=authfile, insecure=insecure, tls=tls, mirror=True),
        )
    try:
        dst_store, dst_repo, dst_ref = open_location(
            dst, authfile=authfile, insecure=insecure, tls=tls, default_tag=None
        )
    except BaseException:
        await src_store.close()
        raise
    try:
        if src_ref is None:
            raise InvalidReference(f"source {src!r} names no tag or digest (use oci:PATH:TAG)")
        if dst_ref is not None and is_digest(dst_ref):
            raise InvalidReference(f"destination {dst!r} names a digest; give a tag or none")
        tags = [dst_ref] if dst_ref is not None else ([] if is_digest(src_ref) else [src_ref])
        tags += [t for t in extra_tags if t not in tags]
        if not tags and dst.startswith("oci:"):
            raise InvalidReference(f"destination {dst!r} needs a tag when the source is a digest (use --tag)")
        copier = Copier(src_store, dst_store, concurrency=concurrency, platforms=platforms, events=events)
        result = await copier.copy(src_repo, src_ref, dst_repo, tags)
        result.sources = [s.as_dict() for s in source_stats(src_store)]
        result.source_manifest_gets = src_store.stats.manifest_gets  # what the source itself served
        return result
    finally:
        await src_store.close()
        await dst_store.close()


def _where(store: Store, repo: str) -> str:
    """``oci:/path`` or ``registry/repo`` for messages."""
    return f"{store.name}/{repo}" if repo else store.name


def _loc(store: Store, repo: str, ref: str) -> str:
    """``oci:/path:tag``, ``registry/repo:tag`` or ``registry/repo@sha256:…`` for messages."""
    return f"{_where(store, repo)}{'@' if is_digest(ref) else ':'}{ref}"


def _transient(e: BaseException) -> bool:
    """Errors worth another attempt with a fresh stream: broken connections, corrupted transfers."""
    if isinstance(e, QuotaExceeded | BudgetExhausted | AuthError | NotFound | UnsupportedManifest | ManifestTooLarge):
        return False
    if isinstance(e, RegistryError):
        # An HTTP answer was already retried by the store's client; a broken stream (no status) was not.
        return e.status is None
    return isinstance(e, DigestMismatch | aiohttp.ClientError | asyncio.TimeoutError | OSError)


async def _gather(coros: Iterable[Awaitable[T]]) -> list[T]:
    """Run *coros* concurrently; on the first failure cancel the rest and raise that error."""
    tasks: list[asyncio.Task[T]] = []
    try:
        async with asyncio.TaskGroup() as tg:
            for c in coros:
                tasks.append(tg.create_task(_as_coro(c)))
    except BaseExceptionGroup as eg:
        raise first_error(eg) from None
    return [t.result() for t in tasks]


async def _as_coro(aw: Awaitable[T]) -> T:
    return await aw


def first_error(eg: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first real error of a task group's exception group (not a cancellation)."""
    for e in eg.exceptions:
        if isinstance(e, BaseExceptionGroup):
            return first_error(e)
        if not isinstance(e, asyncio.CancelledError):
            return e
    return eg.exceptions[0]


async def shielded(coro: Coroutine[Any, Any, T]) -> T:
    """``await asyncio.shield(coro)``: *coro* runs to its end even if the awaiter is cancelled, and its error,
    once nobody awaits it any more, is not logged as "never retrieved" with a traceback (the awaiter's own
    error or cancellation tells what happened)."""
    task = asyncio.ensure_future(coro)
    task.add_done_callback(_retrieve)
    return await asyncio.shield(task)


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


__all__ = [
    "BlobHow",
    "BlobLedger",
    "Copier",
    "CopyEvents",
    "CopyJournal",
    "CopyResult",
    "ManifestHow",
    "copy_location",
    "selected_children",
    "shielded",
]
