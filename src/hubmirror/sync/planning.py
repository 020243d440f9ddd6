"""The plan step: the selection's targets checked with free HEADs on source and destination (`hubmirror.plan.check`),
deferred work first, and the recorded tags that left the selection."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..config import SyncConfig
from ..plan import Plan, check
from ..sources import artifact_subject
from ..state import State, TagRecord
from .events import SyncEvents
from .selection import select_targets, source_key, unique
from .stores import Destination, Sources


async def build_plan(
    cfg: SyncConfig,
    *,
    state: State,
    dest: Destination,
    sources: Sources,
    cache_dir: Path | None = None,
    events: SyncEvents | None = None,
) -> Plan:
    """Decide what the run will do, spending no pulls (library from git, HEADs on source and destination)."""
    events = events or SyncEvents()
    plan = Plan()
    targets = await select_targets(
        cfg, plan, state=state, dest=dest, sources=sources, cache_dir=cache_dir, events=events
    )

    # Deferred work from earlier runs goes first.
    deferred = {(d.dest_repo, tag) for d in await state.aio.deferred() for tag in d.tags}
    targets = [
        replace(t, priority=(0, *t.priority[1:])) if (dest.key(t.dest_repo), t.tag) in deferred else t for t in targets
    ]
    plan.targets = unique(targets)
    events.phase(f"checking {len(plan.targets)} tags (manifest HEADs, free)")
    await check(
        plan, sources=sources.__getitem__, dest=dest.store, state=state, dest_key=dest.key, overwrite=cfg.overwrite
    )
    # A target that could not be checked leaves the selection in doubt: prune deletes nothing in this run. One
    # the source says does not exist leaves only its own repository in doubt: its tags are not counted as
    # leaving (below), the rest prunes.
    missing = {id(t) for t in plan.missing}
    unchecked = [(t, r) for t, r in plan.failed if id(t) not in missing]
    if unchecked:
        target, reason = unchecked[0]
        more = f" and {len(unchecked) - 1} more" if len(unchecked) > 1 else ""
        plan.block_prune(f"{target.canonical} could not be checked ({reason}){more}")

    # A tag source that could not be listed leaves the selection in doubt: prune deletes nothing in this run
    # (and its own repository's tags are not even counted as leaving).
    for listing in plan.sources:
        if listing.error:
            plan.block_prune(f"tag source {listing.name} could not be listed ({listing.error})")
    selected = {(dest.key(t.dest_repo), t.tag) for t in plan.targets}
    protected = {source_key(listing, dest) for listing in plan.sources if listing.error}
    protected |= {dest.key(t.dest_repo) for t in plan.missing}
    records = await state.aio.tags(prefix=dest.prefix)
    held = _held_subjects(plan, records, selected, dest)
    plan.leaving = [
        r
        for r in records
        if r.created_by_hubmirror
        and (r.dest_repo, r.tag) not in selected
        and r.dest_repo not in protected
        and not _follows_held(r, held)
    ]
    return plan


def _held_subjects(
    plan: Plan, records: list[TagRecord], selected: set[tuple[str, str | None]], dest: Destination
) -> set[tuple[str, str]]:
    """(destination repository, digest) of every image a selected tag holds or will hold: what the source
    has now, and what a recorded selected tag still holds (a copy deferred or failed keeps the old one)."""
    held = {(dest.key(u.target.dest_repo), u.upstream_digest) for u in plan.up_to_date}
    held |= {(dest.key(i.dest_repo), i.upstream_digest) for i in plan.items}
    held |= {(r.dest_repo, r.upstream_digest) for r in records if (r.dest_repo, r.tag) in selected}
    return held


def _follows_held(record: TagRecord, held: set[tuple[str, str]]) -> bool:
    """A signature or referrers tag (``sha256-<hex>[.sig|.att|.sbom]``) whose subject a selected tag holds:
    it stays as long as its image does, and leaves with it."""
    found = artifact_subject(record.tag)
    return found is not None and (record.dest_repo, found[0]) in held


__all__ = ["build_plan"]
