"""One worker of a run shared by several ``hubmirror sync`` processes on one PostgreSQL state.

Every worker reads the whole selection (git, no pulls), joins the job's run (or starts it) and then, one
destination repository at a time, claims it (`claim.Claims`), plans it (free HEADs), copies it on pulls
taken from the quota the workers share (`claim.SharedQuota`), records it and marks it done. When no
repository is left to claim it waits while others still hold some (a worker that dies leaves its
repository to the others once its lease runs out). Once every repository is done, the last worker to
finish closes the run: prune, the run record, the library commit. Each worker's report covers what it did;
its ``run`` part covers the whole run.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..config import SyncConfig
from ..copy import first_error
from ..plan import Plan, Target
from ..report import EXIT_DEFERRED, EXIT_DONE, EXIT_FAILED, RUN_STATUS, Outcome, SyncReport, Totals
from ..state import State
from . import freshness
from .claim import BlobClaims, Claims, SharedQuota, quota_key
from .close import close_run
from .events import RunControl, SyncEvents
from .journal import settle_intents
from .planning import ChildrenCheck, block_prune, check_targets, select_plan
from .record import start_copies
from .reporting import add_failed, add_transfers, finish_report
from .runner import copy_and_follow
from .stores import Destination, Scope, Sources

#: A unit's marker for "not every child of its indexes could be looked at" (not a prune blocker).
_UNCHECKED = "\x00children unchecked"
#: A unit's marker (before its name) for "the source says this repository does not exist" (not a prune
#: blocker: the closer keeps that repository's tags, the rest prunes, as in a single process).
_MISSING = "\x00missing "
#: A lease when the config gives none (`SyncConfig.lease`).
DEFAULT_LEASE = 30.0
#: Repositories one worker works on at once (each claimed, planned and copied on its own; their items
#: share the config's ``concurrency``).
LANES = 4


async def run_worker(
    cfg: SyncConfig,
    *,
    state: State,
    dest: Destination,
    sources: Sources,
    report: SyncReport,
    events: SyncEvents,
    cache_dir: Path | None,
    control: RunControl | None,
) -> tuple[Plan, SyncReport]:
    """Take part in the run of *cfg*'s job on the cooperative *state*; the whole selection's plan (its
    targets, and for the closer what left it) and this worker's report."""
    # The state's server restarting mid-run: calls wait for it up to two leases, then the worker stops.
    state.reconnect_window = 2 * (cfg.lease or DEFAULT_LEASE)
    # The whole selection's targets in priority order, as the single process's plan has them, not checked:
    # each worker checks only the repositories it claims.
    whole = await select_plan(cfg, state=state, dest=dest, sources=sources, cache_dir=cache_dir, events=events)
    report.commit = whole.commit
    claims = Claims(state, lease=cfg.lease or DEFAULT_LEASE)
    by_unit: dict[str, list[Target]] = {}
    for t in whole.targets:
        by_unit.setdefault(dest.key(t.dest_repo), []).append(t)
    children = await ChildrenCheck.begin(state, dest)  # does this run HEAD the children of indexes up to date?
    job = f"{cfg.job_id} -> {dest.prefix}"  # the workers of one job (a config) into one destination
    run_id = await claims.join(job, list(by_unit), commit=whole.commit)
    report.run_id = run_id
    # Every pull from here on is taken from the quota the workers share, as this worker of this run (the
    # selection above reads git only: no pulls).
    sources.budget.pool = SharedQuota(
        state, quota_key(cfg), worker=claims.worker, run_id=run_id, reserve=sources.budget.reserve
    )
    ledger = BlobClaims(state, run_id, claims.worker, lease=claims.lease)  # blobs the workers share
    events.phase(f"worker {claims.worker} on run {run_id} ({len(by_unit)} repositories)")
    if control is not None:
        control.copying = True
    add_failed(whole, report, dest)  # the selection's own problems: every worker sees them
    semaphore = asyncio.Semaphore(cfg.concurrency)  # the items copied at once, whatever repository
    unchecked = 0  # repositories whose indexes' children could not all be looked at (verify)

    async def lane() -> None:
        """Claim, plan, copy and record repositories one after the other until none is left."""
        nonlocal unchecked
        while control is None or control.reason is None:
            unit = await claims.next()
            if unit is None:
                return
            blockers = await _work_unit(
                cfg, whole, unit, by_unit.get(unit, []), state=state, dest=dest, sources=sources,
                report=report, run_id=run_id, events=events, control=control, semaphore=semaphore, verify=children.due,
                ledger=ledger,
            )  # fmt: skip
            unchecked += blockers.count(_UNCHECKED)
            blockers = [b for b in blockers if b != _UNCHECKED]
            await claims.done(unit, blockers=blockers, summary=_summary(report, sources, dest, unchecked))

    async with claims.heartbeat():
        try:
            async with asyncio.TaskGroup() as tg:
                for _ in range(min(LANES, cfg.concurrency)):
                    tg.create_task(lane())
        except BaseException as e:
            await claims.release()
            if isinstance(e, BaseExceptionGroup):
                raise first_error(e) from None
            raise
        stopped = control is not None and control.reason is not None
        left = await state.run(state.units_left, run_id) if stopped else 0
        if left:  # what is left is the other workers' (or, with none, the next run's)
            assert control is not None
            why = f"{control.reason}; {left} repositories left to the other workers or the next run"
            report.add(Outcome.DEFERRED, "run", dest.name, reason=why)
        await freshness.note_reasons(report, state=state)
        closer = await claims.close(_summary(report, sources, dest, unchecked), stopped=stopped)
        if closer:
            await _close(cfg, whole, claims, state=state, dest=dest, sources=sources, report=report, events=events)
            complete = report.run is not None and not report.run["children_unchecked"]  # every worker's
            await children.done(state, dest, complete=complete)
        else:
            finish_report(report, sources, dest, cfg)
            summaries, _ = await state.run(state.run_work, run_id)
            report.run = _whole_run(summaries, closer=False)
    return whole, report


async def _work_unit(
    cfg: SyncConfig,
    whole: Plan,
    unit: str,
    targets: list[Target],
    *,
    state: State,
    dest: Destination,
    sources: Sources,
    report: SyncReport,
    run_id: int,
    events: SyncEvents,
    control: RunControl | None,
    semaphore: asyncio.Semaphore,
    verify: bool,
    ledger: BlobClaims,
) -> list[str]:
    """Plan, copy and record one claimed destination repository; what must stop prune (checks that failed;
    `_UNCHECKED` when *verify* could not look at every child of its indexes)."""
    plan = Plan(commit=whole.commit, targets=targets, job=whole.job)
    # Pushes begun here and never recorded (a worker that held this repository died): settled first.
    await settle_intents(state, dest, repo=unit)

    scope = Scope(dest, unit)  # the state is read for this repository only
    blockers = await check_targets(cfg, plan, scope=scope, state=state, sources=sources, verify=verify)
    if verify and not plan.children_checked:
        blockers.append(_UNCHECKED)
    if plan.missing:  # the source says it does not exist: the closer keeps this repository's tags from prune
        blockers.append(_MISSING + unit)
    await start_copies(plan, report, scope=scope, state=state, run_id=run_id)
    events.phase(f"{unit}: {len(plan.copies)} to copy, {len(plan.retags)} to retag, ~{plan.pulls_needed} pulls")
    budget = sources.budget
    await budget.top_up(sum(i.estimated_pulls for i in plan.copies if sources.is_hub(i.source_registry)))
    try:
        await copy_and_follow(
            cfg,
            plan,
            report,
            state=state,
            scope=scope,  # this repository's deferred rows not deferred again go
            sources=sources,
            events=events,
            control=control,
            run_id=run_id,
            semaphore=semaphore,
            ledger=ledger,
        )
    finally:
        await budget.release()
    return blockers


async def _close(
    cfg: SyncConfig,
    whole: Plan,
    claims: Claims,
    *,
    state: State,
    dest: Destination,
    sources: Sources,
    report: SyncReport,
    events: SyncEvents,
) -> None:
    """The last worker closes the run for all (`close_run`): prune what left the selection (unless a worker's
    check failed), settle freshness, record the run with every worker's totals, and the library commit when
    the whole run is done."""
    run_id = report.run_id
    assert run_id is not None
    units = {u[0] for u in await state.run(state.work_units, run_id)}
    for d in await state.aio.deferred():  # deferred work of repositories that left the selection goes
        if d.dest_repo.startswith(dest.prefix) and d.dest_repo not in units:
            await state.aio.clear_deferred(d.source_ref, d.dest_repo)
    _, blockers = await state.run(state.run_work, run_id)
    missing = {b.removeprefix(_MISSING) for b in blockers if b.startswith(_MISSING)}
    whole.missing.extend(t for t in whole.targets if dest.key(t.dest_repo) in missing)  # their tags stay
    # Every worker's checks that failed, and the tag sources not listed.
    block_prune(whole, [b for b in blockers if not b.startswith(_MISSING)])
    # The commit the run started with (a worker joining later may have read a newer one): synced only if
    # this worker's selection was made from it too.
    started = next((r.commit for r in await state.run(state.runs, 50) if r.id == run_id), None)

    async def whole_run() -> dict[str, Any]:  # this worker's report is finished: every worker's part added up
        summaries, _ = await state.run(state.run_work, run_id)
        unchecked = int(summaries.get(claims.worker, {}).get("children_unchecked", 0))
        summaries[claims.worker] = _summary(report, sources, dest, unchecked)
        return _whole_run(summaries, closer=True)

    # What left the selection is found by prune, from the state after every worker's copies.
    await close_run(
        cfg, whole, report, state=state, dest=dest, sources=sources, events=events, started_commit=started,
        whole_run=whole_run,
    )  # fmt: skip
    await state.run(state.end_run, run_id)


def _summary(report: SyncReport, sources: Sources, dest: Destination, unchecked: int = 0) -> dict[str, Any]:
    """What this worker did so far: its items' exit code and counts, its transfer totals, and how many of
    its repositories' indexes could not have every child looked at."""
    totals = Totals()
    add_transfers(totals, sources, dest)
    totals.blobs_skipped = report.totals.blobs_skipped
    totals.duration = (datetime.now(UTC) - report.started).total_seconds()
    own = SyncReport(items=report.items)
    return {
        "exit_code": own.exit_code,
        "counts": own.counts(),
        "totals": asdict(totals),
        "children_unchecked": unchecked,
    }


_PER_RUN = frozenset({"ratelimit_remaining", "ratelimit_limit", "ratelimit_window"})


def _whole_run(summaries: dict[str, dict[str, Any]], *, closer: bool) -> dict[str, Any]:
    """Every worker's summary added up: the run's exit code and status, counts and totals; *closer*: this
    worker closed the run (its report is the one notifications are sent for)."""
    counts: dict[str, int] = {}
    totals: dict[str, float] = {}
    codes = set()
    unchecked = 0
    for s in summaries.values():
        codes.add(int(s.get("exit_code", EXIT_DONE)))
        unchecked += int(s.get("children_unchecked", 0))
        for k, v in (s.get("counts") or {}).items():
            counts[k] = counts.get(k, 0) + int(v)
        for k, v in (s.get("totals") or {}).items():
            if k in _PER_RUN or not isinstance(v, int | float):
                continue
            totals[k] = max(totals.get(k, 0), v) if k == "duration" else totals.get(k, 0) + v
    code = EXIT_FAILED if EXIT_FAILED in codes else EXIT_DEFERRED if EXIT_DEFERRED in codes else EXIT_DONE
    status = RUN_STATUS[code]
    return {
        "workers": len(summaries),
        "closer": closer,
        "exit_code": code,
        "status": status,
        "counts": counts,
        "totals": totals,
        "children_unchecked": unchecked,
    }


__all__ = ["DEFAULT_LEASE", "LANES", "run_worker"]
