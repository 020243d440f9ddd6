"""The check: a manifest HEAD per source tag (free on Docker Hub) and per destination tag, compared with what the
state recorded, gives each target one verdict:

* **failed**: the HEADs failed, or the source has no such tag (`_failure`);
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
from dataclasses import dataclass
from typing import TypeVar

from .._errors import HubmirrorError, NotFound
from ..copy import PLATFORMS_ANNOTATION, SOURCE_DIGEST_ANNOTATION
from ..platform import Platform
from ..state import State, TagRecord
from ..store import Store
from .estimate import classify
from .model import Conflict, Plan, Target, UpToDate, WorkItem, selection_text

T = TypeVar("T")

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
) -> None:
    """HEAD every source and destination tag; fill *plan* with up-to-date targets, conflicts and work items.

    The state is read once (off the event loop). A destination tag with no record and other content than
    the source is a conflict unless *overwrite*, or unless it is a filtered index hubmirror wrote (its
    annotations name the source digest).
    """
    records = {(r.dest_repo, r.tag): r for r in await state.aio.tags(prefix=dest_key(""))}
    started = time.monotonic()
    seen_all = await _look(plan.targets, sources=sources, dest=dest, records=records, dest_key=dest_key)
    plan.checked_at = started
    pending: dict[_WorkKey, WorkItem] = {}
    for seen in seen_all:
        failure = _failure(seen)
        if failure is not None:
            plan.failed.append((seen.target, failure))
            if seen.error is None:  # the source has no such tag or repository
                plan.missing.append(seen.target)
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
) -> list[_Seen]:
    """HEAD each target's source and destination tag (at most `CHECK_CONCURRENCY` at once)."""
    sem = asyncio.Semaphore(CHECK_CONCURRENCY)

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
        seen = _Seen(t, record=records.get((dest_key(t.dest_repo), t.tag)) if t.tag is not None else None)
        rec = seen.record
        if t.immutable and rec is not None and rec.dest_digest:
            # mirrored once: an immutable tag is not checked again
            seen.src, seen.dst = (rec.upstream_digest, t.known_media_type), (rec.dest_digest, "")
            return seen
        try:
            if t.known_digest is not None:
                seen.src = (t.known_digest, t.known_media_type)
            else:
                seen.src = await head(sources(t.source_registry), t.source_repo, t.source_ref)
            seen.dst = await head(dest, t.dest_repo, t.tag or t.source_ref)
        except NotFound as e:
            seen.src = seen.dst = None
            seen.not_found = str(e) or None
        except HubmirrorError as e:
            seen.error = str(e)
            return seen
        if seen.src is not None and seen.dst is not None and rec is None and seen.dst[0] != seen.src[0]:
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

    return await _gather(one(t) for t in targets)


# ---------------------------------------------------------------------------------------- verdicts


def _failure(seen: _Seen) -> str | None:
    """Why the target cannot be planned (its HEADs failed, or the source has no such tag), else None."""
    t = seen.target
    if seen.error is not None:
        return seen.error
    if seen.src is None:
        return seen.not_found or f"{t.canonical} not found on {t.source_registry}"
    return None


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


def _add_work(pending: dict[_WorkKey, WorkItem], seen: _Seen) -> None:
    """Add the target to the work item of its source digest, destination repository and platform selection
    (tags sharing content are written by one item), with why it is copied."""
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


def _same_selection(record: TagRecord, t: Target) -> bool:
    """Was *record* copied with the platform selection *t* asks for?"""
    if record.platforms is None:  # recorded before the state kept it: verbatim or filtered is all we know
        return (record.dest_digest == record.upstream_digest) == (t.platforms is None)
    return record.platforms == selection_text(t.platforms)


async def _gather(aws: Iterable[Awaitable[T]]) -> list[T]:
    return list(await asyncio.gather(*aws))


__all__ = ["CHECK_CONCURRENCY", "check"]
