"""Recording in the state: every tag written, adopted or followed, as soon as it is at the destination."""

from __future__ import annotations

from datetime import UTC, datetime

from ..copy import CopyResult
from ..plan import Plan, WorkItem, selection_text
from ..referrers import Followed, subject_repository
from ..report import Outcome, SyncReport
from ..state import State, TagRecord
from . import freshness
from .reporting import add_failed
from .stores import Destination, Scope


async def record_copied(item: WorkItem, result: CopyResult, *, state: State, dest: Destination, run_id: int) -> None:
    """Record the tags a finished copy wrote (created by hubmirror unless they were there before), forget
    the index kept for it and its deferred rows."""
    key = dest.key(item.dest_repo)
    selection = selection_text(item.platforms)
    records = [
        TagRecord(
            dest_repo=key,
            tag=t.tag,
            source_ref=t.canonical,
            upstream_digest=result.source_digest,
            dest_digest=result.digest,
            synced_at=datetime.now(UTC),
            run_id=run_id,
            # a tag that was there before hubmirror knew it (--overwrite) stays not created by hubmirror
            created_by_hubmirror=t.tag not in item.preexisting,
            platforms=selection,
        )
        for t in item.targets
        if t.tag is not None
    ]
    await state.aio.record_tags(records)
    await state.aio.drop_manifest(item.upstream_digest)
    await state.aio.clear_deferred_many((t.canonical, key) for t in item.targets)  # one transaction, not one a tag


async def record_followed(followed: list[Followed], *, state: State, dest: Destination, run_id: int) -> None:
    """Record the signature and referrers tags now at the destination, like image tags: created by
    hubmirror when it wrote them (one found there already stays not created: prune never deletes it; one
    recorded before keeps its flag). Prune deletes them once no selected tag holds their subject."""
    records = [
        TagRecord(
            dest_repo=dest.key(f.subject.dest_repo),
            tag=f.ref,
            source_ref=f"{subject_repository(f.subject)}:{f.ref}",
            upstream_digest=f.source_digest or f.digest or "",
            dest_digest=f.digest or "",
            synced_at=datetime.now(UTC),
            run_id=run_id,
            created_by_hubmirror=f.written,
            platforms="",
        )
        for f in followed
        if f.is_tag
    ]
    await state.aio.record_tags(records)


async def start_copies(plan: Plan, report: SyncReport, *, scope: Scope, state: State, run_id: int) -> None:
    """The start of the copies of *scope* (the whole destination, or a worker's repository), once its plan is
    checked: the failures the plan found go to the report (`add_failed`), the tags found right are recorded
    (`record_up_to_date`), and every tag the plan's items write is noted as a pending change
    (`freshness.note_changes`). The state is read for the scope only."""
    add_failed(plan, report, scope.dest)
    await record_up_to_date(plan, state=state, dest=scope.dest, report=report, run_id=run_id, prefix=scope.prefix)
    await freshness.note_changes(plan, state=state, dest=scope.dest, prefix=scope.prefix)


async def record_up_to_date(
    plan: Plan, *, state: State, dest: Destination, report: SyncReport, run_id: int, prefix: str | None = None
) -> None:
    """Remember destination tags found already right. One the state had no record of was not created by
    hubmirror (created=False: prune never deletes it); one it had keeps its created flag. *prefix*: the
    plan's repositories all start with it (default: the destination's)."""
    records = [
        TagRecord(
            dest_repo=dest.key(u.target.dest_repo),
            tag=u.target.tag,
            source_ref=u.target.canonical,
            upstream_digest=u.upstream_digest,
            dest_digest=u.dest_digest,
            synced_at=datetime.now(UTC),
            run_id=run_id,
            created_by_hubmirror=u.created,
            platforms=selection_text(u.target.platforms),
        )
        for u in plan.up_to_date
        if u.target.tag is not None and not u.recorded
    ]
    await state.aio.record_tags(records)
    # Changes pending from an earlier run that are now right (copied then, recorded now; or pushed by others).
    pending = {(c.dest_repo, c.tag) for c in await state.aio.pending_changes(prefix=prefix or dest.prefix)}
    settled: dict[str, list[str]] = {}
    for u in plan.up_to_date:
        key = dest.key(u.target.dest_repo)
        if u.target.tag is not None and (key, u.target.tag) in pending:
            settled.setdefault(key, []).append(u.target.tag)
    for key, tags in settled.items():
        await freshness.settle(state, key, tags, report)
    groups: dict[tuple[str, str], list[str]] = {}
    first: dict[tuple[str, str], str] = {}
    for u in plan.up_to_date:
        k = (dest.key(u.target.dest_repo), u.upstream_digest)
        groups.setdefault(k, []).append(u.target.tag or u.target.source_ref)
        first.setdefault(k, u.target.canonical)
    for (key, digest), tags in groups.items():
        report.add(Outcome.UP_TO_DATE, first[(key, digest)], key, tags, digest=digest)


__all__ = ["record_copied", "record_followed", "record_up_to_date", "start_copies"]
