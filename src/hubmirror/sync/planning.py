"""The plan step: the selection's targets checked with free HEADs on source and destination (`hubmirror.plan.check`),
deferred work first, and the recorded tags of this job that left the selection.

Jobs: several sync jobs may share a state and a destination. Every tag recorded in a run is claimed for the
running job (`State.job`), and a run claims the records of every tag it selects (so the first run of a job
adopts the records written before jobs were tracked). What left a job's selection is considered only among
the tags that job owns (`leaving`): a tag another job also owns stays (the job lets go of it), and a tag no
job owns is never pruned.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from .._errors import LibraryError
from ..config import SyncConfig
from ..plan import Plan, Target, check
from ..report import Outcome, SyncReport
from ..sources import artifact_subject
from ..state import State, TagRecord
from .events import SyncEvents
from .selection import select_targets, source_key, unique
from .stores import Destination, Scope, Sources, probe_destination

#: Added to a failed clone or fetch of a library URL: the library can come from a file instead.
OFFLINE_HINT = (
    "; without network access, give --library a local clone or a git bundle of official-images (made where "
    "there is network: git clone https://github.com/docker-library/official-images, or git bundle create "
    "official-images.bundle --all inside such a clone)"
)

#: The children of every index believed up to date are looked at again (HEADs at the destination, no pulls)
#: at least this often, and at the next run after any prune deleted something in the destination.
CHILDREN_CHECK_EVERY: Final = timedelta(hours=24)


async def build_plan(
    cfg: SyncConfig,
    *,
    state: State,
    dest: Destination,
    sources: Sources,
    cache_dir: Path | None = None,
    events: SyncEvents | None = None,
) -> Plan:
    """Decide what the run will do, spending no pulls (library from git, HEADs on source and destination):
    the single process's plan, the selection (`select_plan`) checked for the whole destination
    (`check_targets`), with what left it (`find_leaving`)."""
    events = events or SyncEvents()
    plan = await select_plan(cfg, state=state, dest=dest, sources=sources, cache_dir=cache_dir, events=events)
    children = await ChildrenCheck.begin(state, dest)
    events.phase(check_phase(plan))
    unchecked = await check_targets(
        cfg,
        plan,
        scope=Scope(dest),
        state=state,
        sources=sources,
        verify=children.due,
        progress=events.checked,
    )
    block_prune(plan, unchecked)
    await find_leaving(plan, state=state, dest=dest)
    if not cfg.dry_run:
        await children.done(state, dest, complete=plan.children_checked)
    return plan


async def select_plan(
    cfg: SyncConfig,
    *,
    state: State,
    dest: Destination,
    sources: Sources,
    cache_dir: Path | None,
    events: SyncEvents,
) -> Plan:
    """The selection step of the single process and of every worker: the destination probed (one line, and
    nothing done, when it does not answer), then a plan of the selection's targets in priority order,
    deferred work first (`select_targets`, `deferred_first`), not yet checked."""
    await probe_destination(dest)
    plan = Plan(job=cfg.job_id)
    try:
        targets = await select_targets(
            cfg, plan, state=state, dest=dest, sources=sources, cache_dir=cache_dir, events=events
        )
    except LibraryError as e:
        from ..library._git import _is_url  # only when the library could not be read

        if cfg.reads_library and _is_url(cfg.library) and str(e).startswith(("cloning ", "fetching ")):
            raise LibraryError(f"{e}{OFFLINE_HINT}") from None
        raise
    plan.targets = await deferred_first(targets, state=state, dest=dest)
    return plan


async def check_targets(
    cfg: SyncConfig,
    plan: Plan,
    *,
    scope: Scope,
    state: State,
    sources: Sources,
    verify: bool,
    progress: Callable[[int, int], None] | None = None,
) -> list[str]:
    """The check step of *scope*: the whole destination (the single process) or one repository (a worker's
    unit, whose targets *plan* holds). The targets are checked with free HEADs on source and destination
    (`hubmirror.plan.check`; with *verify*, the children of the indexes found up to date too; *progress* is
    told how far it got), and the job claims the recorded tags it selects in the scope (the first run of a
    job adopts what it selects; not in a dry run).

    Returns why prune must delete nothing in this run, one reason per target that could not be checked
    (`block_prune` sums them up). One the source says does not exist (``plan.missing``) leaves only its own
    repository in doubt: `find_leaving` keeps its tags (a worker passes its unit's on to the closer)."""
    await check(
        plan,
        sources=sources.__getitem__,
        dest=scope.dest.store,
        state=state,
        dest_key=scope.key,
        overwrite=cfg.overwrite,
        progress=progress,
        verify_children=verify,
        tag_images=sources.tag_images(),
    )
    missing = {id(t) for t in plan.missing}
    unchecked = [f"{t.canonical} could not be checked ({reason})" for t, reason in plan.failed if id(t) not in missing]
    if not cfg.dry_run:
        records = {(r.dest_repo, r.tag) for r in await state.aio.tags(prefix=scope.prefix)}
        await state.aio.claim_tags(plan.job or cfg.job_id, sorted(_selected(plan, scope.dest) & records))
    return unchecked


def block_prune(plan: Plan, unchecked: list[str]) -> None:
    """What leaves the selection in doubt, so that prune deletes nothing in this run: the targets that could
    not be checked (*unchecked*, from `check_targets` of the whole destination or of every unit: the first
    named, with how many more), and the tag sources that could not be listed (whose own repositories' tags
    are not even counted as leaving: `find_leaving`)."""
    if unchecked:
        more = f" and {len(unchecked) - 1} more" if len(unchecked) > 1 else ""
        plan.block_prune(f"{unchecked[0]}{more}")
    for listing in plan.sources:
        if listing.error:
            plan.block_prune(f"tag source {listing.name} could not be listed ({listing.error})")


@dataclass(frozen=True)
class ChildrenCheck:
    """Does this run's check look at the children of the indexes it finds up to date (*due*:
    `children_check_due`), and when it began. Once every child in the destination was found (by the single
    process's check, or by every worker's), `done` records it: the next runs need not look for a while."""

    due: bool
    started: datetime

    @classmethod
    async def begin(cls, state: State, dest: Destination) -> ChildrenCheck:
        due = await children_check_due(state, dest)
        return cls(due, datetime.now(UTC))

    async def done(self, state: State, dest: Destination, *, complete: bool) -> None:
        if self.due and complete:
            await state.aio.set_children_checked(dest.prefix, self.started)


async def deferred_first(targets: list[Target], *, state: State, dest: Destination) -> list[Target]:
    """*targets* without duplicates, the work earlier runs deferred first (the sync's plan and a worker's
    selection order them alike)."""
    deferred = {(d.dest_repo, tag) for d in await state.aio.deferred() for tag in d.tags}
    return unique(
        [
            replace(t, priority=(0, *t.priority[1:])) if (dest.key(t.dest_repo), t.tag) in deferred else t
            for t in targets
        ]
    )


async def children_check_due(state: State, dest: Destination) -> bool:
    """Should the check look at the children of the indexes it finds up to date? Yes when it never did for
    this destination (a fresh state, or a state an older hubmirror wrote, whose prune deleted children),
    after a prune deleted something there since, and every `CHILDREN_CHECK_EVERY` (deletions behind
    hubmirror's back)."""
    checked = await state.aio.children_checked(dest.prefix)
    if checked is None or datetime.now(UTC) - checked > CHILDREN_CHECK_EVERY:
        return True
    return bool(await state.aio.deletions(prefix=dest.prefix, since=checked))


async def find_leaving(plan: Plan, *, state: State, dest: Destination, report: SyncReport | None = None) -> None:
    """Fill ``plan.leaving`` and ``plan.released`` from the state: the tags this job owns that left its
    selection. Without *report*, as the plan predicts the run (every copy succeeds); with it, after the
    copies, from what the state and the report say now: a tag moved in this run no longer holds its old
    image, whose signatures leave with it in this run."""
    selected = _selected(plan, dest)
    protected = {source_key(listing, dest) for listing in plan.sources if listing.error}
    protected |= {dest.key(t.dest_repo) for t in plan.missing}  # the source says they do not exist
    records = await state.aio.tags(prefix=dest.prefix)
    owners = await state.aio.tag_owners(prefix=dest.prefix)
    held = _held_subjects(plan, records, selected, dest, report)
    plan.leaving, plan.released, plan.co_owners = [], [], {}
    for r in records:
        key = (r.dest_repo, r.tag)
        if key in selected or r.dest_repo in protected or _follows_held(r, held):
            continue
        jobs = owners.get(key, frozenset())
        if plan.job is not None and plan.job not in jobs:
            continue  # another job's tag, or no job's (recorded before jobs were tracked): never this job's to prune
        others = tuple(sorted(jobs - {plan.job} if plan.job is not None else ()))
        if r.created_by_hubmirror and not others:
            plan.leaving.append(r)
        else:
            plan.released.append(r)
            if others:
                plan.co_owners[key] = others


def _selected(plan: Plan, dest: Destination) -> set[tuple[str, str]]:
    """(state name of the destination repository, tag) of every target of the selection."""
    return {(dest.key(t.dest_repo), t.tag) for t in plan.targets if t.tag is not None}


def check_phase(plan: Plan) -> str:
    """``checking N tags (manifest HEADs, free)``, saying which tags need no HEAD on the source: a tags API
    gave their digests (the summary's HEAD count is the source's, and may well be 0 then)."""
    n = len(plan.targets)
    known = sum(1 for t in plan.targets if t.known_digest is not None)
    if not known:
        return f"checking {n} tags (manifest HEADs, free)"
    if known == n:
        return f"checking {n} tags (digests from the tags API: no HEAD on the source; free HEADs on the destination)"
    return f"checking {n} tags ({known} digests from the tags API, manifest HEADs for the other {n - known}, free)"


def _held_subjects(
    plan: Plan,
    records: list[TagRecord],
    selected: set[tuple[str, str]],
    dest: Destination,
    report: SyncReport | None,
) -> set[tuple[str, str]]:
    """(destination repository, digest) of every image a selected tag holds, or will hold.

    Before the copies (no *report*): what is up to date, what the copies will write, and what the recorded
    tags whose check failed or that conflict still hold. After them: what the recorded selected tags hold
    now (a copy deferred or failed keeps the old image; a tag moved in this run holds the new one only),
    what is up to date, and what this run copied or retagged (tags or digests)."""
    held = {(dest.key(u.target.dest_repo), u.upstream_digest) for u in plan.up_to_date}
    if report is None:
        held |= {(dest.key(i.dest_repo), i.upstream_digest) for i in plan.items}
        planned = {(dest.key(u.target.dest_repo), u.target.tag) for u in plan.up_to_date}
        planned |= {(dest.key(i.dest_repo), t) for i in plan.items for t in i.tags}
        held |= {(r.dest_repo, r.upstream_digest) for r in records if (r.dest_repo, r.tag) in selected - planned}
        return held
    held |= {(r.dest_repo, r.upstream_digest) for r in records if (r.dest_repo, r.tag) in selected}
    done = (Outcome.COPIED, Outcome.RETAGGED)
    held |= {(i.dest, i.digest) for i in report.items if i.outcome in done and i.digest}
    return held


def _follows_held(record: TagRecord, held: set[tuple[str, str]]) -> bool:
    """A signature or referrers tag (``sha256-<hex>[.sig|.att|.sbom]``) whose subject a selected tag holds:
    it stays as long as its image does, and leaves with it."""
    found = artifact_subject(record.tag)
    return found is not None and (record.dest_repo, found[0]) in held


__all__ = [
    "CHILDREN_CHECK_EVERY",
    "OFFLINE_HINT",
    "ChildrenCheck",
    "block_prune",
    "build_plan",
    "check_phase",
    "check_targets",
    "children_check_due",
    "deferred_first",
    "find_leaving",
    "select_plan",
]
