"""The prune step: tags hubmirror created that left the selection, deleted only when the selection is certain,
within --max-delete, and never when a tag that stays shares their digest."""

from __future__ import annotations

import math

from .._errors import NotFound, RegistryError
from ..plan import Plan
from ..report import Outcome, SyncReport
from ..state import State, TagRecord
from ..store import Store
from .events import SyncEvents
from .stores import Destination

#: Prune's default --max-delete: this share of the tags hubmirror created in the destination, rounded up.
MAX_DELETE_SHARE = 0.10


def max_delete_default(managed: int) -> int:
    """10 % of *managed* tags, rounded up: a mirror of 5 tags may lose 1 per run, one of 1,000 lose 100."""
    return math.ceil(managed * MAX_DELETE_SHARE)


async def prune(
    plan: Plan,
    *,
    state: State,
    dest: Destination,
    report: SyncReport,
    enabled: bool,
    events: SyncEvents,
    max_delete: int | None = None,
    dry_run: bool = False,
) -> None:
    """Tags hubmirror created that left the selection: delete them with *enabled*, else report them kept.

    Deletes nothing, and reports a failure, when the selection is in doubt (`Plan.prune_blockers`) or more
    than *max_delete* tags would go (default `max_delete_default` of the tags hubmirror manages there).
    Distribution 2.8 deletes only by digest, and that removes every tag on the digest: such a delete is
    done only when no tag that stays shares the digest; otherwise the tag is kept and the report says why.

    With *dry_run* nothing is deleted: the report says what a real run would do (refuse, with the same
    failure and exit code, or delete), counting the tags the plan's copies would add as managed.
    """
    if not plan.leaving and not (enabled and plan.prune_blockers):
        return
    if not enabled:
        _keep_leaving(plan, report, "left the selection; run with --prune to delete")
        return
    records = await state.aio.tags(prefix=dest.prefix)
    managed = _managed_after(plan, records, dest) if dry_run else sum(1 for r in records if r.created_by_hubmirror)
    refusals = prune_refusals(plan, managed=managed, max_delete=max_delete)
    if refusals:
        refused = "a real run would refuse, nothing would be deleted" if dry_run else "refused, nothing deleted"
        report.add(Outcome.FAILED, "--prune", dest.name, reason=f"{refused}: {'; '.join(refusals)}")
        kept = "a real run's prune would refuse" if dry_run else "prune refused"
        _keep_leaving(plan, report, f"left the selection; {kept} (see the --prune row)")
        return
    if dry_run:
        for rec in plan.leaving:
            why = "would delete (left the selection)"
            report.add(Outcome.PRUNED, rec.source_ref, rec.dest_repo, [rec.tag], digest=rec.upstream_digest, reason=why)
        return
    events.phase(f"pruning {len(plan.leaving)} tags that left the selection")
    by_repo: dict[str, list[TagRecord]] = {}
    for rec in plan.leaving:
        by_repo.setdefault(rec.dest_repo, []).append(rec)
    for key, records in by_repo.items():
        repo = dest.repo(key)
        leaving = {r.tag for r in records}
        for rec in records:
            outcome, reason = await _prune_tag(dest.store, repo, rec, leaving)
            if outcome is Outcome.PRUNED:
                await state.aio.forget_tag(rec.dest_repo, rec.tag)
            report.add(outcome, rec.source_ref, rec.dest_repo, [rec.tag], digest=rec.upstream_digest, reason=reason)


def prune_refusals(plan: Plan, *, managed: int, max_delete: int | None) -> list[str]:
    """Why prune must delete nothing in this run (empty: it may): the plan's blockers, and more tags
    leaving than *max_delete* (default `max_delete_default` of the *managed* tags hubmirror created there)."""
    refusals = list(plan.prune_blockers)
    limit = max_delete if max_delete is not None else max_delete_default(managed)
    if len(plan.leaving) > limit:
        how = "--max-delete" if max_delete is not None else f"the default --max-delete: 10 % of the {managed} tags"
        refusals.append(
            f"it would delete {len(plan.leaving)} tags, more than {limit} ({how} hubmirror manages there); "
            f"give --max-delete {len(plan.leaving)} if that is intended"
        )
    return refusals


def _managed_after(plan: Plan, records: list[TagRecord], dest: Destination) -> int:
    """The tags hubmirror will have created in the destination when the plan's copies are recorded, as a
    real run counts them before it prunes: those recorded now, and each new tag a copy or retag writes
    (a tag already recorded keeps its flag; one found at the destination first is not created by hubmirror)."""
    known = {(r.dest_repo, r.tag) for r in records}
    new = {
        (dest.key(item.dest_repo), tag)
        for item in plan.items
        for tag in item.tags
        if tag not in item.preexisting and (dest.key(item.dest_repo), tag) not in known
    }
    return sum(1 for r in records if r.created_by_hubmirror) + len(new)


def _keep_leaving(plan: Plan, report: SyncReport, reason: str) -> None:
    """Report every tag that left the selection as kept, for *reason*."""
    for rec in plan.leaving:
        report.add(Outcome.KEPT, rec.source_ref, rec.dest_repo, [rec.tag], digest=rec.upstream_digest, reason=reason)


async def _prune_tag(store: Store, repo: str, rec: TagRecord, leaving: set[str]) -> tuple[Outcome, str | None]:
    head = await store.head_manifest(repo, rec.tag)
    if head is None:
        return Outcome.PRUNED, "already gone from the destination"
    if head.digest != rec.dest_digest:
        return Outcome.KEPT, f"the tag now points at {head.digest[:19]}, not what hubmirror wrote"
    try:
        await store.delete_manifest(repo, rec.tag)
        return Outcome.PRUNED, None
    except NotFound:
        return Outcome.PRUNED, "already gone from the destination"
    except RegistryError as e:
        if e.status not in (400, 404, 405) and e.code not in ("UNSUPPORTED", "DIGEST_INVALID", "MANIFEST_UNKNOWN"):
            return Outcome.KEPT, f"delete refused: {e}"
    # The registry deletes by digest only: allowed when every tag on that digest is leaving too.
    sharing = []
    for tag in await store.list_tags(repo):
        if tag in leaving:
            continue
        other = await store.head_manifest(repo, tag)
        if other is not None and other.digest == head.digest:
            sharing.append(tag)
    if sharing:
        return (
            Outcome.KEPT,
            f"the registry deletes by digest only, and kept tag(s) {', '.join(sorted(sharing))} share it",
        )
    try:
        await store.delete_manifest(repo, head.digest)
    except NotFound:
        pass
    except RegistryError as e:
        return Outcome.KEPT, f"delete refused: {e}"
    return Outcome.PRUNED, "deleted by digest (the registry cannot delete a tag alone)"


__all__ = ["MAX_DELETE_SHARE", "max_delete_default", "prune", "prune_refusals"]
