"""Plan a sync without spending pulls: which destination tags exist, which are stale, what it costs.

1. *Targets*: every destination tag the run should hold, from the official-images library (its tag
   groups, filtered) and/or an explicit image list.
2. *Check*: a manifest HEAD per source tag (free on Docker Hub) and per destination tag, compared with
   what the state recorded — so an image rebuilt on the source with no change in git is caught.
3. *Items*: one work item per distinct source digest and destination repository; tags sharing that
   digest are written by the same item (content fetched once, the other tags retagged).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

from ._errors import HubmirrorError, InvalidReference, NotFound
from ._fs import decode_text
from .library import LibraryDiff, TagGroup
from .media import INDEX_TYPES, OCI_INDEX, OCI_MANIFEST
from .platform import Platform
from .reference import DOCKER_HUB, Reference
from .sources import SourceListing
from .state import State, TagRecord
from .store import Store
from .store.mirrored import MirroredStore

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
    reason: str = "new"  # new | changed | rebuilt | deferred | missing
    previous_digest: str | None = None
    estimated_pulls: int = 1
    #: The content mirror found holding the item's top manifest (a free HEAD), whose manifests then cost
    #: no pull; `mirror_manifests` estimates how many it serves.
    mirror: str | None = None
    mirror_manifests: int = 0

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
    recorded: bool  # state already knew; False: found right at the destination, recorded now


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
    leaving: list[TagRecord] = field(default_factory=list)  # recorded tags that left the selection
    sources: list[SourceListing] = field(default_factory=list)  # tag sources: listings and policy decisions

    @property
    def pulls_needed(self) -> int:
        return sum(i.estimated_pulls for i in self.items)

    @property
    def mirror_manifests(self) -> int:
        """Manifests the content mirrors are expected to serve (no pulls)."""
        return sum(i.mirror_manifests for i in self.items)

    def affordable(self, allowance: int) -> tuple[int, int]:
        """How many copies a run with *allowance* pulls would do, and their estimated pulls: items in
        priority order, each setting aside its estimate, until one does not fit (as the run does)."""
        fit = spent = 0
        for item in self.copies:
            if spent + item.estimated_pulls > allowance:
                break
            fit += 1
            spent += item.estimated_pulls
        return fit, spent

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
) -> None:
    """HEAD every source and destination tag; fill *plan* with up-to-date targets and work items."""
    sem = asyncio.Semaphore(CHECK_CONCURRENCY)

    async def head(store: Store, repo: str, ref: str) -> tuple[str, str] | None:
        async with sem:
            d = await store.head_manifest(repo, ref)
        return (d.digest, d.media_type) if d else None

    async def one(t: Target) -> tuple[Target, tuple[str, str] | None, tuple[str, str] | None, str | None]:
        if t.immutable and t.tag is not None:
            rec = state.tag(dest_key(t.dest_repo), t.tag)
            if rec is not None and rec.dest_digest:  # mirrored once: an immutable tag is not checked again
                return t, (rec.upstream_digest, t.known_media_type), (rec.dest_digest, ""), None
        src: tuple[str, str] | None
        try:
            if t.known_digest is not None:
                src = (t.known_digest, t.known_media_type)
            else:
                src = await head(sources(t.source_registry), t.source_repo, t.source_ref)
            dst = await head(dest, t.dest_repo, t.tag or t.source_ref)
        except NotFound:
            src = dst = None
        except HubmirrorError as e:
            return t, None, None, str(e)
        return t, src, dst, None

    results = await _gather(one(t) for t in plan.targets)
    pending: dict[tuple[str, str, str, tuple[Platform, ...] | None], WorkItem] = {}
    for t, src, dst, error in results:
        if error is not None:
            plan.failed.append((t, error))
            continue
        if src is None:
            plan.failed.append((t, f"{t.canonical} not found on {t.source_registry}"))
            continue
        upstream, media_type = src
        record = state.tag(dest_key(t.dest_repo), t.tag) if t.tag else None
        dest_digest = dst[0] if dst else None
        if dest_digest is not None:
            if record is not None and record.upstream_digest == upstream and record.dest_digest == dest_digest:
                plan.up_to_date.append(UpToDate(t, upstream, dest_digest, True))
                continue
            if dest_digest == upstream and t.platforms is None:
                plan.up_to_date.append(UpToDate(t, upstream, dest_digest, record is not None))
                continue
        key = (t.source_registry, t.dest_repo, upstream, t.platforms)
        item = pending.get(key)
        if item is None:
            item = pending[key] = WorkItem(
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
        if record is not None and record.upstream_digest != upstream:
            item.reason = "rebuilt"
        elif record is not None or dest_digest is not None:
            item.reason = "changed" if item.reason == "new" else item.reason
        if t.priority and t.priority[0] == 0:
            item.reason = "deferred"
    items = sorted(pending.values(), key=lambda i: i.priority)
    await _classify(items, dest=dest, state=state, dest_key=dest_key, sources=sources)
    plan.items = items


async def _classify(
    items: list[WorkItem],
    *,
    dest: Store,
    state: State,
    dest_key: Callable[[str], str],
    sources: Callable[[str], Store] | None = None,
) -> None:
    """Mark items whose content the destination already holds as retags (0 pulls); estimate the rest.
    Content a content mirror holds (its top manifest found there with a free HEAD) is estimated at 0
    pulls: the mirror serves it."""

    async def one(item: WorkItem) -> None:
        have: str | None = None
        if item.platforms is None:
            have = item.upstream_digest
        else:
            for rec in state.tags(dest_key(item.dest_repo)):
                if rec.upstream_digest == item.upstream_digest and rec.dest_digest != rec.upstream_digest:
                    have = rec.dest_digest
                    break
        if have is not None and await dest.head_manifest(item.dest_repo, have) is not None:
            item.kind = "retag"
            item.estimated_pulls = 0
            return
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
