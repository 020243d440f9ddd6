"""Freshness: how long an upstream change takes to reach the mirror, per tag.

The plan notes every tag a run must write as a *pending change* in the state, since the earliest upstream
change time known: the library commit that changed its entry, Docker Hub's push time from the tags API, or,
for a rebuild seen by a HEAD, when hubmirror first saw the new digest. A tag that enters the selection (a
first sync, a widened selection, a new job) starts its clock when the job first sees it, so the lag measures
the mirror, not the age of old images. When the destination holds the new digest, the change is settled:
its lag (write time − change time) goes to the report and to ``hubmirror_tag_lag_seconds``. What stays
pending (deferred by the quota, failed, not reached) is counted with the age of the oldest.
"""

from __future__ import annotations

from datetime import UTC, datetime

from ..plan import Plan
from ..report import Outcome, SyncReport
from ..state import PendingChange, State
from .stores import Destination

#: Why a change waits, before the run says more.
NOT_REACHED = "not yet copied"


async def note_changes(plan: Plan, *, state: State, dest: Destination, prefix: str | None = None) -> None:
    """Every tag the plan's items write: pending since its upstream change (kept from an earlier run when
    older). A tag hubmirror never recorded starts its clock now. *prefix*: the plan's repositories all
    start with it (default: the destination's)."""
    now = datetime.now(UTC)
    recorded = {(r.dest_repo, r.tag) for r in await state.aio.tags(prefix=prefix or dest.prefix)}
    changes = []
    for item in plan.items:
        key = dest.key(item.dest_repo)
        for t in item.targets:
            if t.tag is None:
                continue
            since = now
            if (key, t.tag) in recorded and t.changed_at is not None:
                since = min(now, t.changed_at)
            changes.append(PendingChange(key, t.tag, item.upstream_digest, since, now, NOT_REACHED))
    await state.aio.note_changes(changes)


async def note_reasons(report: SyncReport, *, state: State) -> None:
    """Why the changes of the report's deferred and failed items still wait (their outcome and reason)."""
    reasons: dict[tuple[str, str], str] = {}
    for item in report.items:
        if item.outcome in (Outcome.DEFERRED, Outcome.FAILED):
            why = f"{item.outcome.value}: {item.reason or ''}".rstrip(": ")
            for tag in item.tags:
                reasons[(item.dest, tag)] = why[:500]
    await state.aio.set_change_reasons(reasons)


async def settle(state: State, dest_repo: str, tags: list[str], report: SyncReport) -> None:
    """The tags of *dest_repo* now hold their upstream content: their pending changes go, their lags are
    reported."""
    now = datetime.now(UTC)
    for c in await state.aio.settle_changes(dest_repo, tags):
        report.lags.append((dest_repo, max(0.0, (now - c.changed_at).total_seconds())))


async def finish(plan: Plan, report: SyncReport, *, state: State, dest: Destination) -> None:
    """After the copies: why the changes still pending wait (the items' outcomes), changes of tags that left
    the selection forgotten, and the count and oldest age of what is pending in the report."""
    await note_reasons(report, state=state)
    leaving: dict[str, list[str]] = {}
    for rec in plan.leaving:
        leaving.setdefault(rec.dest_repo, []).append(rec.tag)
    for repo, tags in leaving.items():
        await state.aio.settle_changes(repo, tags)
    pending = await state.aio.pending_changes(prefix=dest.prefix)
    report.pending_changes = len(pending)
    if pending:
        oldest = min(c.changed_at for c in pending)
        report.oldest_pending = max(0.0, (datetime.now(UTC) - oldest).total_seconds())


__all__ = ["NOT_REACHED", "finish", "note_changes", "note_reasons", "settle"]
