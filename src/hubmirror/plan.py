"""Plan a sync without spending pulls: which destination tags exist, which are stale, what it costs.

1. *Targets*: every destination tag the run should hold, from the official-images library (its tag
   groups, filtered) and/or an explicit image list.
2. *Check*: a manifest HEAD per source tag (free on Docker Hub) and per destination tag, compared with
   what the state recorded — so an image rebuilt on the source with no change in git is caught.
3. *Items*: one work item per distinct source digest and destination repository; tags sharing that
   digest are written by the same item (content fetched once, the other tags retagged).

A destination tag the state has no record of is *foreign*: with the source's content it is adopted (recorded
as not created by hubmirror, so prune never deletes it); with other content it is a *conflict*, left as it is
unless ``--overwrite``. A tag recorded with another platform selection is copied again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar

from ._errors import HubmirrorError, InvalidReference, NotAccessible, NotFound
from ._fs import decode_text
from .budget import allot
from .copy import PLATFORMS_ANNOTATION, SOURCE_DIGEST_ANNOTATION, selected_children
from .media import INDEX_TYPES, OCI_INDEX, OCI_MANIFEST, Manifest
from .platform import Platform
from .reference import DOCKER_HUB, Reference
from .sources import SourceListing
from .state import State, TagRecord
from .store import Store
from .store.mirrored import MirroredStore

if TYPE_CHECKING:  # the library package is loaded only by runs that read it (not --list ones)
    from .library import LibraryDiff, TagGroup

T = TypeVar("T")

#: Manifest HEADs in flight at once during the check (HEADs are free on Docker Hub).
CHECK_CONCURRENCY = 32


@dataclass(frozen=True)
class Target:
    """One destination tag, and the source tag whose content it should hold."""

    canonical: str  # the source as users name it: docker.io/library/python:3.13
    source_registry: str  # where it is read from (docker.io replaced by --source)
    source_repo: str  # library/python
    source_ref: str  # tag or digest on the source
    dest_repo: str  # repository inside the destination store: mirror/python
    tag: str | None  # destination tag (None: a digest-only list entry, stored by digest)
    platforms: tuple[Platform, ...] | None = None  # None: copy verbatim; else write a filtered index
    n_platforms: int = 0  # platforms upstream (for the pull estimate), 0 if unknown
    priority: tuple[int, ...] = ()
    #: For a SharedTag: selected platforms no selected entry group brings along. The SharedTag index's
    #: other children are copied by those entries' items, so they cost no pull of its own.
    shared_missing: int | None = None
    #: The source listing gave the tag's digest (Docker Hub's tags API): the check sends no source HEAD.
    known_digest: str | None = None
    known_media_type: str = ""
    #: A tag that never moves (a source's ``immutable`` patterns): once recorded, it is not checked again.
    immutable: bool = False


@dataclass
class WorkItem:
    """Content to bring to one destination repository, and the tags to point at it."""

    source_registry: str
    source_repo: str
    upstream_digest: str
    media_type: str
    dest_repo: str
    targets: list[Target]
    platforms: tuple[Platform, ...] | None
    kind: Literal["copy", "retag"] = "copy"
    reason: str = "new"  # new | changed | rebuilt | deferred | missing | platforms changed
    previous_digest: str | None = None
    estimated_pulls: int = 1
    #: The content mirror found holding the item's top manifest (a free HEAD), whose manifests then cost
    #: no pull; `mirror_manifests` estimates how many it serves.
    mirror: str | None = None
    mirror_manifests: int = 0
    #: Tags that were at the destination before hubmirror recorded them (written with --overwrite, or a
    #: filtered index of an earlier hubmirror whose state is gone): recorded as not created by hubmirror.
    preexisting: set[str] = field(default_factory=set)
    #: What each destination tag pointed at when the plan HEADed it (absent tags left out); the copier
    #: uses it instead of HEADing the tags again while it is fresh (`Plan.checked_at`).
    dest_tags: dict[str, str] = field(default_factory=dict)

    @property
    def tags(self) -> list[str]:
        return [t.tag for t in self.targets if t.tag is not None]

    @property
    def canonical(self) -> str:
        return self.targets[0].canonical

    @property
    def priority(self) -> tuple[int, ...]:
        return min(t.priority for t in self.targets)


@dataclass
class UpToDate:
    """Destination tags that already hold the source's current content."""

    target: Target
    upstream_digest: str
    dest_digest: str
    recorded: bool  # state already knew exactly this; False: found right at the destination, recorded now
    created: bool = False  # the state's created_by_hubmirror (False for a tag adopted now)


@dataclass
class Conflict:
    """A destination tag hubmirror did not write that holds other content than the source: left as it is."""

    target: Target
    upstream_digest: str
    dest_digest: str


def selection_text(platforms: Sequence[Platform] | None) -> str:
    """How the state records a platform selection: ``""`` for every platform, else sorted and comma-joined."""
    return ",".join(sorted(str(p) for p in platforms)) if platforms else ""


@dataclass
class Affordable:
    """What a run can do with the pulls it has now (`Plan.affordable`)."""

    whole: int = 0  # copies done completely
    started: int = 0  # copies bigger than a window, begun now and continued in later windows
    passed: int = 0  # copies that do not fit now (deferred)
    pulls: int = 0  # pulls spent
    unbudgeted: int = 0  # copies from registries the budget does not count (not Docker Hub)


@dataclass
class Plan:
    """What a run will do. Built with HEADs only: no pulls spent."""

    commit: str | None = None
    previous_commit: str | None = None
    diff: LibraryDiff | None = None
    full_reconcile: bool = False  # the previous commit is unknown or not an ancestor
    targets: list[Target] = field(default_factory=list)
    up_to_date: list[UpToDate] = field(default_factory=list)
    items: list[WorkItem] = field(default_factory=list)
    failed: list[tuple[Target, str]] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)  # foreign tags with other content (not --overwrite)
    leaving: list[TagRecord] = field(default_factory=list)  # recorded tags that left the selection
    sources: list[SourceListing] = field(default_factory=list)  # tag sources: listings and policy decisions
    #: Problems with the selection itself, reported as failures: (what, reason), e.g. ("--images alpah",
    #: "matches no repository …"). Each also blocks prune.
    selection_errors: list[tuple[str, str]] = field(default_factory=list)
    #: Why prune must delete nothing this run. Anything that makes the selection doubtful adds a reason:
    #: a library file that failed to parse, a selection term that matched nothing, a source that failed
    #: to list (`block_prune`); `prune` then deletes nothing and the run exits 1.
    prune_blockers: list[str] = field(default_factory=list)
    #: When `check` HEADed the destination tags (``time.monotonic()``); None before.
    checked_at: float | None = None

    def block_prune(self, reason: str) -> None:
        """Make prune refuse this run, with *reason* (a tag source whose listing failed calls this)."""
        if reason not in self.prune_blockers:
            self.prune_blockers.append(reason)

    def selection_error(self, what: str, reason: str) -> None:
        """A selection term or input that selected nothing or could not be read: a failure, and no prune."""
        self.selection_errors.append((what, reason))
        self.block_prune(f"{what}: {reason}")

    @property
    def pulls_needed(self) -> int:
        return sum(i.estimated_pulls for i in self.items)

    @property
    def mirror_manifests(self) -> int:
        """Manifests the content mirrors are expected to serve (no pulls)."""
        return sum(i.mirror_manifests for i in self.items)

    def affordable(
        self, allowance: int | None, capacity: int | None = None, *, budgeted: str | None = None
    ) -> Affordable:
        """What a run with *allowance* pulls would do, as the run does it (`hubmirror.budget.allot`): items in
        priority order, each taking its estimate when it fits; one that does not is passed over and smaller
        ones are taken; one bigger than *capacity* (a whole window less the reserve) gets what is left and
        goes on in later windows, and so does the first one passed over when pulls are left at the end.
        *budgeted*: only copies from that source registry draw on the budget."""
        copies = [i for i in self.copies if budgeted is None or i.source_registry == budgeted]
        grants = allot((i.estimated_pulls for i in copies), allowance, capacity)
        out = Affordable(unbudgeted=len(self.copies) - len(copies))
        for item, granted in zip(copies, grants, strict=True):
            if granted is None:
                out.passed += 1
            elif granted < item.estimated_pulls:
                out.started += 1
                out.pulls += granted
            else:
                out.whole += 1
                out.pulls += item.estimated_pulls
        return out

    @property
    def copies(self) -> list[WorkItem]:
        return [i for i in self.items if i.kind == "copy"]

    @property
    def retags(self) -> list[WorkItem]:
        return [i for i in self.items if i.kind == "retag"]


# ---------------------------------------------------------------------------------------- targets


#: Destination naming: ``flat`` (``docker.io/library/python`` → ``NS/python``, ``ghcr.io/a/b`` → ``NS/a/b``)
#: or ``mirror`` (Docker Hub's paths kept, ``NS/library/python``, other registries under their host name:
#: ``NS/ghcr.io/a/b``), which a containerd, podman or Docker node can use as a drop-in docker.io mirror.
Layout = Literal["flat", "mirror"]
LAYOUTS: tuple[Layout, ...] = ("flat", "mirror")


def dest_repository(ref: Reference, namespace: str, layout: Layout = "flat") -> str:
    """Where *ref* lands under *namespace* in *layout* (see `Layout`)."""
    path = ref.repository
    if layout == "mirror":
        if ref.registry != DOCKER_HUB:
            # A port is not allowed in a repository path component: 127.0.0.1:5000 → 127.0.0.1-5000.
            path = f"{ref.registry.replace(':', '-')}/{path}"
    elif ref.registry == DOCKER_HUB and path.startswith("library/"):
        path = path[len("library/") :]
    return f"{namespace}/{path}" if namespace else path


def library_targets(
    groups: Iterable[TagGroup],
    *,
    source: str,
    namespace: str,
    layout: Layout = "flat",
    images_order: Sequence[str] = (),
    changed: frozenset[tuple[str, str]] = frozenset(),
) -> list[Target]:
    """A target per tag of each selected library tag group (official images live at docker.io/library)."""
    order = {name: i for i, name in enumerate(images_order)}
    groups = list(groups)
    entry_platforms = {(g.repo, g.entries[0]): set(g.platforms) for g in groups if not g.shared and g.entries}
    targets: list[Target] = []
    position: dict[str, int] = {}
    for group in groups:
        missing: int | None = None
        if group.shared:
            covered = set().union(*(entry_platforms.get((group.repo, e), set()) for e in group.entries))
            missing = len([p for p in group.platforms if p not in covered])
        repo = f"library/{group.repo}"
        plats = group.platforms if group.platforms_filtered else None
        gpos = position.setdefault(group.repo, 0)
        position[group.repo] = gpos + 1
        for i, tag in enumerate(group.tags):
            hot = 0 if (group.repo, tag) in changed else 1
            targets.append(
                Target(
                    canonical=f"{DOCKER_HUB}/{repo}:{tag}",
                    source_registry=source,
                    source_repo=repo,
                    source_ref=tag,
                    dest_repo=dest_repository(Reference(DOCKER_HUB, repo), namespace, layout),
                    tag=tag,
                    platforms=plats,
                    n_platforms=len(group.upstream_platforms),
                    # config order, then what git says changed, then newest (file order) first
                    priority=(1, order.get(group.repo, len(order)), hot, gpos, i),
                    shared_missing=missing,
                )
            )
    return targets


def read_image_list(path: Path) -> list[tuple[int, Reference]]:
    """The references of an image-list file: one per line, ``#`` comments; errors name file and line."""
    try:
        text = decode_text(path.read_bytes(), f"image list {path}")
    except OSError as e:
        raise HubmirrorError(f"cannot read image list {path}: {e.strerror or e}") from None
    except ValueError as e:
        raise HubmirrorError(str(e)) from None
    refs: list[tuple[int, Reference]] = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            refs.append((n, Reference.parse(line)))
        except InvalidReference as e:
            raise InvalidReference(f"{path}:{n}: {e}") from None
    return refs


def list_targets(
    refs: Iterable[tuple[int, Reference]],
    *,
    source: str,
    namespace: str,
    layout: Layout = "flat",
    platforms: Sequence[Platform] = (),
) -> list[Target]:
    """A target per explicit reference; ``docker.io`` entries are read from *source*."""
    targets = []
    for n, ref in refs:
        registry = source if ref.registry == DOCKER_HUB else ref.registry
        targets.append(
            Target(
                canonical=str(ref),
                source_registry=registry,
                source_repo=ref.repository,
                source_ref=ref.ref,
                dest_repo=dest_repository(ref, namespace, layout),
                tag=ref.tag,
                platforms=tuple(platforms) or None,
                priority=(1, 0, 1, n, 0),
            )
        )
    return targets


def source_targets(listing: SourceListing, *, namespace: str, layout: Layout = "flat", order: int = 0) -> list[Target]:
    """A target per tag a tag source kept (newest first), landing at `dest_repository`."""
    spec = listing.spec
    dest_repo = dest_repository(spec.repository, namespace, layout)
    targets = []
    for rank, t in enumerate(listing.kept):
        n = len(t.platforms or ())
        targets.append(
            Target(
                canonical=f"{spec.name}:{t.name}",
                source_registry=listing.source_registry,
                source_repo=spec.repository.repository,
                source_ref=t.name,
                dest_repo=dest_repo,
                tag=t.name,
                platforms=spec.platforms or None,
                n_platforms=n,
                priority=(1, 1000 + order, 1, rank, 0),
                known_digest=t.digest,
                # The tags API does not give the manifest type: a guess is enough for the pull estimate
                # (the copier reads the real type with the manifest).
                known_media_type=OCI_INDEX if n > 1 else OCI_MANIFEST,
                immutable=spec.is_immutable(t.name),
            )
        )
    return targets


# ---------------------------------------------------------------------------------------- check


async def check(
    plan: Plan,
    *,
    sources: Callable[[str], Store],
    dest: Store,
    state: State,
    dest_key: Callable[[str], str],
    overwrite: bool = False,
) -> None:
    """HEAD every source and destination tag; fill *plan* with up-to-date targets, conflicts and work items.

    The state is read once (off the event loop). A destination tag with no record and other content than
    the source is a conflict unless *overwrite*, or unless it is a filtered index hubmirror wrote (its
    annotations name the source digest).
    """
    sem = asyncio.Semaphore(CHECK_CONCURRENCY)
    records = {(r.dest_repo, r.tag): r for r in await state.aio.tags(prefix=dest_key(""))}

    async def head(store: Store, repo: str, ref: str) -> tuple[str, str] | None:
        async with sem:
            d = await store.head_manifest(repo, ref)
        return (d.digest, d.media_type) if d else None

    async def annotations(repo: str, digest: str) -> dict[str, str]:
        """The annotations of a destination index (a filtered copy names its source digest there)."""
        async with sem:
            try:
                m = await dest.get_manifest(repo, digest)
            except HubmirrorError:
                return {}
        ann = m.json.get("annotations") if m.is_index else None
        return {str(k): str(v) for k, v in ann.items()} if isinstance(ann, dict) else {}

    async def one(t: Target) -> _Seen:
        seen = _Seen(t)
        if t.immutable and t.tag is not None:
            rec = records.get((dest_key(t.dest_repo), t.tag))
            if rec is not None and rec.dest_digest:  # mirrored once: an immutable tag is not checked again
                seen.src, seen.dst = (rec.upstream_digest, t.known_media_type), (rec.dest_digest, "")
                return seen
        try:
            if t.known_digest is not None:
                seen.src = (t.known_digest, t.known_media_type)
            else:
                seen.src = await head(sources(t.source_registry), t.source_repo, t.source_ref)
            seen.dst = await head(dest, t.dest_repo, t.tag or t.source_ref)
        except NotAccessible as e:  # a 401 insufficient_scope: missing, or not readable with these credentials
            seen.error = str(e)
            return seen
        except NotFound:
            seen.src = seen.dst = None
        except HubmirrorError as e:
            seen.error = str(e)
            return seen
        recorded = t.tag is not None and (dest_key(t.dest_repo), t.tag) in records
        if seen.src is not None and seen.dst is not None and not recorded and seen.dst[0] != seen.src[0]:
            # Not ours by the state: a filtered index of an earlier hubmirror (state lost) says so itself.
            ann = await annotations(t.dest_repo, seen.dst[0])
            if SOURCE_DIGEST_ANNOTATION in ann and PLATFORMS_ANNOTATION in ann:
                seen.hubmirror_index = True
                seen.filtered_current = (
                    t.platforms is not None
                    and ann[SOURCE_DIGEST_ANNOTATION] == seen.src[0]
                    and ann[PLATFORMS_ANNOTATION] == ",".join(str(p) for p in t.platforms)
                )
        return seen

    started = time.monotonic()
    results = await _gather(one(t) for t in plan.targets)
    plan.checked_at = started
    pending: dict[tuple[str, str, str, tuple[Platform, ...] | None], WorkItem] = {}
    for seen in results:
        t = seen.target
        if seen.error is not None:
            plan.failed.append((t, seen.error))
            continue
        if seen.src is None:
            plan.failed.append((t, f"{t.canonical} not found on {t.source_registry}"))
            continue
        upstream, media_type = seen.src
        record = records.get((dest_key(t.dest_repo), t.tag)) if t.tag else None
        dest_digest = seen.dst[0] if seen.dst else None
        if dest_digest is not None:
            if (
                record is not None
                and record.upstream_digest == upstream
                and record.dest_digest == dest_digest
                and _same_selection(record, t)
            ):
                plan.up_to_date.append(UpToDate(t, upstream, dest_digest, True, record.created_by_hubmirror))
                continue
            if (dest_digest == upstream and t.platforms is None) or seen.filtered_current:
                # What this selection writes for the current upstream, whoever wrote it: adopted (recorded,
                # as not created by hubmirror when the state had no record of it).
                created = record.created_by_hubmirror if record is not None else False
                plan.up_to_date.append(UpToDate(t, upstream, dest_digest, False, created))
                continue
            foreign = record is None and not seen.hubmirror_index
            if record is not None and not record.created_by_hubmirror and record.dest_digest != dest_digest:
                foreign = True  # adopted once, changed by someone else since
            if foreign and not overwrite:
                plan.conflicts.append(Conflict(t, upstream, dest_digest))
                continue
        wkey = (t.source_registry, t.dest_repo, upstream, t.platforms)
        item = pending.get(wkey)
        if item is None:
            item = pending[wkey] = WorkItem(
                source_registry=t.source_registry,
                source_repo=t.source_repo,
                upstream_digest=upstream,
                media_type=media_type,
                dest_repo=t.dest_repo,
                targets=[],
                platforms=t.platforms,
                previous_digest=record.upstream_digest if record else dest_digest,
            )
        item.targets.append(t)
        if dest_digest is not None and t.tag is not None:
            item.dest_tags[t.tag] = dest_digest
            if record is None:
                item.preexisting.add(t.tag)
        if record is not None and record.upstream_digest != upstream:
            item.reason = "rebuilt"
        elif record is not None and record.dest_digest == dest_digest and not _same_selection(record, t):
            item.reason = "platforms changed" if item.reason == "new" else item.reason
        elif record is not None or dest_digest is not None:
            item.reason = "changed" if item.reason == "new" else item.reason
        if t.priority and t.priority[0] == 0:
            item.reason = "deferred"
    items = sorted(pending.values(), key=lambda i: i.priority)
    await _classify(
        items,
        dest=dest,
        records=list(records.values()),
        dest_key=dest_key,
        sources=sources,
        kept=state.aio.kept_manifest,
    )
    plan.items = items


@dataclass
class _Seen:
    """What the check's HEADs found for one target."""

    target: Target
    src: tuple[str, str] | None = None  # (digest, media type) on the source
    dst: tuple[str, str] | None = None  # … at the destination tag
    error: str | None = None
    hubmirror_index: bool = False  # unrecorded, but a filtered index hubmirror wrote (its annotations say)
    filtered_current: bool = False  # … and the one this target's selection writes for the current upstream


def _same_selection(record: TagRecord, t: Target) -> bool:
    """Was *record* copied with the platform selection *t* asks for?"""
    if record.platforms is None:  # recorded before the state kept it: verbatim or filtered is all we know
        return (record.dest_digest == record.upstream_digest) == (t.platforms is None)
    return record.platforms == selection_text(t.platforms)


async def _classify(
    items: list[WorkItem],
    *,
    dest: Store,
    records: list[TagRecord],
    dest_key: Callable[[str], str],
    sources: Callable[[str], Store] | None = None,
    kept: Callable[[str], Awaitable[tuple[str, bytes] | None]] | None = None,
) -> None:
    """Mark items whose content the destination already holds as retags (0 pulls); estimate the rest
    (*kept*: the source manifests an earlier run fetched and kept, by digest).
    Content a content mirror holds (its top manifest found there with a free HEAD) is estimated at 0
    pulls: the mirror serves it."""
    by_repo: dict[str, list[TagRecord]] = {}
    for rec in records:
        by_repo.setdefault(rec.dest_repo, []).append(rec)

    async def one(item: WorkItem) -> None:
        have: str | None = None
        if item.platforms is None:
            have = item.upstream_digest
        else:
            selection = selection_text(item.platforms)
            for rec in by_repo.get(dest_key(item.dest_repo), []):
                if (
                    rec.upstream_digest == item.upstream_digest
                    and rec.dest_digest != rec.upstream_digest
                    and rec.platforms == selection
                ):
                    have = rec.dest_digest
                    break
        if have is not None and await dest.head_manifest(item.dest_repo, have) is not None:
            item.kind = "retag"
            item.estimated_pulls = 0
            return
        held = await kept(item.upstream_digest) if kept is not None else None
        index = Manifest(held[1], held[0]) if held is not None else None
        if index is not None and index.digest == item.upstream_digest and index.is_index:
            # An index fetched by an earlier run whose copy is not finished: exactly the children the
            # destination still lacks (the index itself costs nothing more).
            children = selected_children(index, item.platforms)
            there = await _gather(dest.head_manifest(item.dest_repo, c.digest) for c in children)
            estimate = sum(1 for d in there if d is None)
        else:
            n = max(max(t.n_platforms for t in item.targets), 1)  # unknown: at least one platform
            if item.platforms is not None:
                n = len(item.platforms)
            hints = [t.shared_missing for t in item.targets]
            if all(h is not None for h in hints):
                n = min(h for h in hints if h is not None)
            # an index: itself, plus each platform's image and (usually) its attestation manifest
            estimate = 1 + 2 * n if item.media_type in INDEX_TYPES else 1
        store = sources(item.source_registry) if sources is not None else None
        if isinstance(store, MirroredStore):
            item.mirror = await store.mirror_with(item.source_repo, item.upstream_digest)
        if item.mirror is not None:
            item.mirror_manifests, item.estimated_pulls = estimate, 0
        else:
            item.estimated_pulls = estimate

    await _gather(one(i) for i in items)


async def _gather(aws: Iterable[Awaitable[T]]) -> list[T]:
    return list(await asyncio.gather(*aws))
