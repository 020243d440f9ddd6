"""The check: a manifest HEAD per source tag (free on Docker Hub) and per destination tag, compared with what the
state recorded, gives each target one verdict:

* **failed**: the HEADs failed, or the source has no such tag (`_failure`);
* **repair**: the destination tag holds what the plan would keep, but its index lacks child manifests
  (deleted behind hubmirror's back, or by an older prune): copied again, fetching only those (`_repair`).
  Looked at (a GET of the index and a HEAD per child, at the destination: no pulls) when the caller asks
  (`verify_children`);
* **up to date**: the state recorded exactly what both sides hold (`_up_to_date`);
* **adopted**: the destination already holds what this selection writes for the current upstream, whoever
  wrote it; recorded now, as not created by hubmirror when the state had no record of it (`_adoptable`);
* **conflict**: a tag hubmirror did not write that holds other content, left as it is unless ``--overwrite``
  (`_conflict`);
* **work**: everything else; targets with the same source digest, destination repository and platform
  selection share one `WorkItem` (`_add_work`), whose cost `hubmirror.plan.estimate.classify` estimates.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

import aiohttp

from .._errors import HubmirrorError, NotFound
from ..copy import PLATFORMS_ANNOTATION, SOURCE_DIGEST_ANNOTATION, selected_children
from ..media import INDEX_TYPES, Manifest
from ..platform import Platform
from ..state import State, TagRecord
from ..store import Store
from .estimate import TagImagesLookup, classify
from .model import Conflict, Plan, Target, UpToDate, WorkItem, selection_text

T = TypeVar("T")

#: What a request to the destination may fail with while the children are looked at.
_REQUEST_ERRORS = (HubmirrorError, aiohttp.ClientError, TimeoutError, OSError)

#: Manifest HEADs in flight at once during the check (HEADs are free on Docker Hub).
CHECK_CONCURRENCY = 32

_WorkKey = tuple[str, str, str, tuple[Platform, ...] | None]


@dataclass
class _Seen:
    """What the check's HEADs found for one target."""

    target: Target
    src: tuple[str, str] | None = None  # (digest, media type) on the source
    dst: tuple[str, str] | None = None  # … at the destination tag
    error: str | None = None
    not_found: str | None = None  # the source's NotFound, when it says more than "not found"
    hubmirror_index: bool = False  # unrecorded, but a filtered index hubmirror wrote (its annotations say)
    filtered_current: bool = False  # … and the one this target's selection writes for the current upstream
    record: TagRecord | None = None  # what the state recorded for the destination tag
    missing: list[str] = field(default_factory=list)  # children of the destination index it lacks
    src_size: int = 0  # the source manifest's size (its HEAD's Content-Length), 0 if unknown

    @property
    def upstream(self) -> str:
        assert self.src is not None
        return self.src[0]

    @property
    def dest_digest(self) -> str | None:
        return self.dst[0] if self.dst else None


async def check(
    plan: Plan,
    *,
    sources: Callable[[str], Store],
    dest: Store,
    state: State,
    dest_key: Callable[[str], str],
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    verify_children: bool = False,
    tag_images: TagImagesLookup | None = None,
) -> None:
    """HEAD every source and destination tag; fill *plan* with up-to-date targets, conflicts and work items.

    The state is read once (off the event loop). A destination tag with no record and other content than
    the source is a conflict unless *overwrite*, or unless it is a filtered index hubmirror wrote (its
    annotations name the source digest). *progress* is told (done, total) as the targets are looked at. With
    *verify_children* the child manifests of every destination index found up to date are HEADed too (free):
    an index that lacks some is repaired (``plan.children_checked`` says whether all were found).
    *tag_images*: Docker Hub's tags API for the pull estimate (`hubmirror.plan.estimate.classify`).
    """
    records = {(r.dest_repo, r.tag): r for r in await state.aio.tags(prefix=dest_key(""))}
    started = time.monotonic()
    seen_all = await _look(
        plan.targets, sources=sources, dest=dest, records=records, dest_key=dest_key, progress=progress
    )
    plan.checked_at = started
    if verify_children:
        complete = await _find_missing(seen_all, dest=dest)
        plan.children_checked = complete and not any(seen.missing for seen in seen_all)
    pending: dict[_WorkKey, WorkItem] = {}
    for seen in seen_all:
        failure = _failure(seen)
        if failure is not None:
            plan.failed.append((seen.target, failure))
            if seen.error is None:  # the source has no such tag or repository
                plan.missing.append(seen.target)
        elif (missing := _repair(seen)) is not None:
            _add_work(pending, seen, missing=missing)
        elif (done := _up_to_date(seen) or _adoptable(seen)) is not None:
            plan.up_to_date.append(done)
        elif (conflict := _conflict(seen, overwrite)) is not None:
            plan.conflicts.append(conflict)
        else:
            _add_work(pending, seen)
    items = sorted(pending.values(), key=lambda i: i.priority)
    await classify(
        items,
        dest=dest,
        records=list(records.values()),
        dest_key=dest_key,
        sources=sources,
        kept=state.aio.kept_manifest,
        tag_images=tag_images,
    )
    plan.items = items


# ---------------------------------------------------------------------------------------- the HEADs


async def _look(
    targets: list[Target],
    *,
    sources: Callable[[str], Store],
    dest: Store,
    records: dict[tuple[str, str], TagRecord],
    dest_key: Callable[[str], str],
    progress: Callable[[int, int], None] | None = None,
) -> list[_Seen]:
    """HEAD each target's source and destination tag (at most `CHECK_CONCURRENCY` at once); *progress*
    is told (done, total) at the start and as each target's HEADs end."""
    sem = asyncio.Semaphore(CHECK_CONCURRENCY)

    async def head(store: Store, repo: str, ref: str) -> tuple[str, str] | None:
        async with sem:
            d = await store.head_manifest(repo, ref)
        return (d.digest, d.media_type) if d else None

    async def head_source(t: Target, seen: _Seen) -> tuple[str, str] | None:
        """The source tag's digest and type; its size (the HEAD's Content-Length) goes to the estimate."""
        async with sem:
            d = await sources(t.source_registry).head_manifest(t.source_repo, t.source_ref)
        seen.src_size = d.size if d else 0
        return (d.digest, d.media_type) if d else None

    async def manifest(repo: str, digest: str) -> Manifest | None:
        async with sem:
            try:
                return await dest.get_manifest(repo, digest)
            except HubmirrorError:
                return None

    async def one(t: Target) -> _Seen:
        seen = _Seen(t, record=records.get((dest_key(t.dest_repo), t.tag)) if t.tag is not None else None)
        rec = seen.record
        try:
            if t.immutable and rec is not None and rec.dest_digest:
                # An immutable tag never moves at the source: only the destination is HEADed (free), so a
                # destination that lost it gets it back.
                seen.src = (rec.upstream_digest, t.known_media_type)
            elif t.known_digest is not None:
                seen.src = (t.known_digest, t.known_media_type)
            else:
                seen.src = await head_source(t, seen)
            seen.dst = await head(dest, t.dest_repo, t.tag or t.source_ref)
        except NotFound as e:
            seen.src = seen.dst = None
            seen.not_found = str(e) or None
        except HubmirrorError as e:
            seen.error = str(e)
            return seen
        if (
            seen.src is not None
            and seen.dst is not None
            and rec is None
            and (seen.dst[0] != seen.src[0] or t.platforms is not None)
        ):
            # Not ours by the state (lost, or moved away): what an earlier hubmirror wrote says so itself.
            m = await manifest(t.dest_repo, seen.dst[0])
            if m is not None:
                _recognise(seen, m)
        return seen

    done, total = 0, len(targets)

    async def counted(t: Target) -> _Seen:
        nonlocal done
        seen = await one(t)
        done += 1
        if progress is not None:
            progress(done, total)
        return seen

    if progress is not None:
        progress(0, total)
    return await _gather(counted(t) for t in targets)


def _recognise(seen: _Seen, there: Manifest) -> None:
    """Whether *there*, what an unrecorded destination tag holds, is what this target's selection writes for
    the current upstream: a filtered index names its source digest and platforms in its annotations; an
    index whose every child the selection keeps is written as it is (the source's own digest)."""
    t = seen.target
    if there.digest == seen.upstream:
        if t.platforms is not None:
            seen.filtered_current = not there.is_index or len(selected_children(there, t.platforms)) == len(
                there.children
            )
        return
    ann = there.json.get("annotations") if there.is_index else None
    if not isinstance(ann, dict) or SOURCE_DIGEST_ANNOTATION not in ann or PLATFORMS_ANNOTATION not in ann:
        return
    seen.hubmirror_index = True
    seen.filtered_current = (
        t.platforms is not None
        and ann[SOURCE_DIGEST_ANNOTATION] == seen.upstream
        and ann[PLATFORMS_ANNOTATION] == ",".join(str(p) for p in t.platforms)
    )


async def _find_missing(seen_all: list[_Seen], *, dest: Store) -> bool:
    """Fill ``seen.missing`` for every target about to be found up to date (or adopted) whose destination
    manifest is an index: each distinct index is read once (GET at the destination) and each distinct child
    HEADed once, child indexes in turn. False when a request failed (nothing is assumed missing then)."""
    sem = asyncio.Semaphore(CHECK_CONCURRENCY)
    complete = True
    tops: dict[tuple[str, str], list[_Seen]] = {}
    for seen in seen_all:
        if (
            _failure(seen) is None
            and seen.dst is not None
            and seen.dst[1] in (*INDEX_TYPES, "")
            and (_up_to_date(seen) or _adoptable(seen)) is not None
        ):
            tops.setdefault((seen.target.dest_repo, seen.dst[0]), []).append(seen)
    there: dict[tuple[str, str], asyncio.Task[bool]] = {}  # (repo, digest) → is it at the destination

    async def present(repo: str, digest: str, media_type: str) -> bool:
        """Is *digest* at the destination, with (for an index) all its children?"""
        nonlocal complete
        try:
            if media_type not in INDEX_TYPES and media_type:
                async with sem:
                    return await dest.head_manifest(repo, digest) is not None
            async with sem:
                try:
                    m = await dest.get_manifest(repo, digest)
                except NotFound:
                    return False
        except _REQUEST_ERRORS:
            complete = False
            return True
        if not m.is_index:
            return True
        found = await _gather(child(repo, c.digest, c.media_type) for c in m.children if not c.is_foreign)
        return all(found)

    def child(repo: str, digest: str, media_type: str) -> asyncio.Task[bool]:
        key = (repo, digest)
        if key not in there:
            there[key] = asyncio.ensure_future(present(repo, digest, media_type))
        return there[key]

    async def top(repo: str, digest: str) -> list[str]:
        """The manifests missing under the index *digest* (itself, when it is gone)."""
        nonlocal complete
        try:
            async with sem:
                m = await dest.get_manifest(repo, digest)
        except NotFound:
            return [digest]
        except _REQUEST_ERRORS:
            complete = False
            return []
        if not m.is_index:
            return []
        children = [c for c in m.children if not c.is_foreign]
        found = await _gather(child(repo, c.digest, c.media_type) for c in children)
        return [c.digest for c, ok in zip(children, found, strict=True) if not ok]

    keys = list(tops)
    results = await _gather(top(repo, digest) for repo, digest in keys)
    for key, missing in zip(keys, results, strict=True):
        for seen in tops[key]:
            seen.missing = missing
    return complete


# ---------------------------------------------------------------------------------------- verdicts


def _failure(seen: _Seen) -> str | None:
    """Why the target cannot be planned (its HEADs failed, or the source has no such tag), else None."""
    t = seen.target
    if seen.error is not None:
        return seen.error
    if seen.src is None:
        return seen.not_found or f"{t.canonical} not found on {t.source_registry}"
    return None


def _repair(seen: _Seen) -> list[str] | None:
    """The destination tag holds what the plan would keep (up to date or adoptable), but its index lacks
    child manifests (the digests returned): copied again, only those fetched. Never a tag left pointing at
    an index a client cannot pull."""
    return seen.missing or None


def _up_to_date(seen: _Seen) -> UpToDate | None:
    """The state recorded exactly what both sides hold now, with this selection."""
    rec, dest_digest = seen.record, seen.dest_digest
    if (
        rec is not None
        and dest_digest is not None
        and rec.upstream_digest == seen.upstream
        and rec.dest_digest == dest_digest
        and _same_selection(rec, seen.target)
    ):
        return UpToDate(seen.target, seen.upstream, dest_digest, True, rec.created_by_hubmirror)
    return None


def _adoptable(seen: _Seen) -> UpToDate | None:
    """The destination tag holds what this selection writes for the current upstream, whoever wrote it:
    adopted (recorded now, as not created by hubmirror when the state had no record of it)."""
    t, dest_digest = seen.target, seen.dest_digest
    if dest_digest is None:
        return None
    if (dest_digest == seen.upstream and t.platforms is None) or seen.filtered_current:
        created = seen.record.created_by_hubmirror if seen.record is not None else False
        return UpToDate(t, seen.upstream, dest_digest, False, created)
    return None


def _conflict(seen: _Seen, overwrite: bool) -> Conflict | None:
    """A destination tag hubmirror did not write (or adopted once and someone changed since) that holds other
    content: left as it is unless *overwrite*."""
    rec, dest_digest = seen.record, seen.dest_digest
    if dest_digest is None or overwrite:
        return None
    foreign = rec is None and not seen.hubmirror_index
    if rec is not None and not rec.created_by_hubmirror and rec.dest_digest != dest_digest:
        foreign = True  # adopted once, changed by someone else since
    return Conflict(seen.target, seen.upstream, dest_digest) if foreign else None


def _add_work(pending: dict[_WorkKey, WorkItem], seen: _Seen, *, missing: list[str] | None = None) -> None:
    """Add the target to the work item of its source digest, destination repository and platform selection
    (tags sharing content are written by one item), with why it is copied (*missing*: the children its
    destination index lacks, for a repair)."""
    t, rec, dest_digest, upstream = seen.target, seen.record, seen.dest_digest, seen.upstream
    assert seen.src is not None
    key = (t.source_registry, t.dest_repo, upstream, t.platforms)
    item = pending.get(key)
    if item is None:
        item = pending[key] = WorkItem(
            source_registry=t.source_registry,
            source_repo=t.source_repo,
            upstream_digest=upstream,
            media_type=seen.src[1],
            dest_repo=t.dest_repo,
            targets=[],
            platforms=t.platforms,
            previous_digest=rec.upstream_digest if rec else dest_digest,
            size=seen.src_size,
        )
    item.targets.append(t)
    if dest_digest is not None and t.tag is not None:
        item.dest_tags[t.tag] = dest_digest
        if rec is None:
            item.preexisting.add(t.tag)
    if rec is not None and rec.upstream_digest != upstream:
        item.reason = "rebuilt"
    elif rec is not None and rec.dest_digest == dest_digest and not _same_selection(rec, t):
        item.reason = "platforms changed" if item.reason == "new" else item.reason
    elif rec is not None or dest_digest is not None:
        item.reason = "changed" if item.reason == "new" else item.reason
    if t.priority and t.priority[0] == 0:
        item.reason = "deferred"
    if missing:
        item.reason = "children missing"
        item.missing_children = max(item.missing_children, len(missing))


def _same_selection(record: TagRecord, t: Target) -> bool:
    """Was *record* copied with the platform selection *t* asks for?"""
    if record.platforms is None:  # recorded before the state kept it: verbatim or filtered is all we know
        return (record.dest_digest == record.upstream_digest) == (t.platforms is None)
    return record.platforms == selection_text(t.platforms)


async def _gather(aws: Iterable[Awaitable[T]]) -> list[T]:
    return list(await asyncio.gather(*aws))


__all__ = ["CHECK_CONCURRENCY", "check"]
