"""`run_sync`, what ``hubmirror sync`` calls: plan (HEADs only) → copy (within the pull budget) → state →
signatures → prune → report.

It mirrors the selected official images (and/or an image list, tag sources) into a registry namespace or an
OCI layout, spends Docker Hub pulls only on content that changed, records every tag in the state database as
soon as it is pushed (an intent before the push, settled by the next run if the process died before the
record: `settle_intents`), defers what the budget does not allow, and returns a `SyncReport` whose
`exit_code` the CLI exits with.

Stopped by its `RunControl` (SIGTERM to ``serve``, SIGINT or SIGTERM to ``sync``), a run finishes the items
in flight, defers the copies not started and what follows them (signatures), prunes and reports as usual;
cancelled (a second signal), it marks its run ``interrupted``: every tag pushed is recorded or has its intent.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from ..config import SyncConfig
from ..plan import Plan
from ..report import SyncReport
from ..state import State
from .close import close_run
from .events import RunControl, SyncEvents
from .journal import settle_intents
from .planning import build_plan
from .prune import prune
from .record import start_copies
from .reporting import finish_report, plan_report
from .runner import copy_and_follow
from .stores import Destination, Scope, Sources, open_destination
from .worker import run_worker


async def run_sync(
    cfg: SyncConfig,
    *,
    events: SyncEvents | None = None,
    cache_dir: Path | None = None,
    control: RunControl | None = None,
) -> tuple[Plan, SyncReport]:
    """Run one sync as *cfg* says; returns the plan and the report (``report.exit_code`` for the shell).

    With ``cfg.dry_run`` only the plan is made: no pulls, no writes to the destination or the state.
    *control* lets the caller stop the run gracefully (`RunControl.stop`).
    """
    events = events or SyncEvents()
    dest = open_destination(cfg)
    sources = Sources(cfg)
    report = SyncReport(library=cfg.library if cfg.reads_library else None, dest=cfg.dest)
    report.dry_run = cfg.dry_run
    state = await asyncio.to_thread(State.open, cfg.state, job=cfg.job_id)  # claims the tags it records
    try:
        if state.cooperative and not cfg.dry_run:  # PostgreSQL: workers share the run instead of a lock
            return await run_worker(
                cfg, state=state, dest=dest, sources=sources, report=report, events=events, cache_dir=cache_dir,
                control=control,
            )  # fmt: skip
        async with contextlib.AsyncExitStack() as stack:
            if not cfg.dry_run:
                await stack.enter_async_context(state.aio.lock())
                # Pushes a killed run began and never recorded: recorded (or dropped) before anything is planned.
                await settle_intents(state, dest)
            plan = await build_plan(cfg, state=state, dest=dest, sources=sources, cache_dir=cache_dir, events=events)
            report.commit = plan.commit

            if cfg.dry_run:
                plan_report(plan, report, dest)
                await prune(  # the dry run predicts what the real run deletes
                    plan,
                    state=state,
                    dest=dest,
                    report=report,
                    enabled=cfg.prune,
                    events=events,
                    max_delete=cfg.max_delete,
                    dry_run=True,
                )
                finish_report(report, sources, dest, cfg)
                return plan, report
            run_id = await state.aio.begin_run(plan.commit)
            report.run_id = run_id
            if control is not None:
                control.copying = True
            try:
                await _copy_and_finish(
                    cfg,
                    plan,
                    report,
                    state=state,
                    dest=dest,
                    sources=sources,
                    events=events,
                    control=control,
                )
            except asyncio.CancelledError:  # aborted (a second Ctrl-C): say so in the state, not "running"
                with contextlib.suppress(Exception):
                    await asyncio.shield(state.aio.finish_run(run_id, "interrupted", {}, commit=plan.commit))
                raise
            return plan, report
    finally:
        state.close()
        await sources.close()
        await dest.store.close()


async def _copy_and_finish(
    cfg: SyncConfig,
    plan: Plan,
    report: SyncReport,
    *,
    state: State,
    dest: Destination,
    sources: Sources,
    events: SyncEvents,
    control: RunControl | None,
) -> None:
    """A real run once its plan is made and begun in the state: the copies started (`start_copies`), copy,
    signatures (`copy_and_follow`), then the close (`close_run`: prune, freshness, report, library commit,
    the run's end), all for the whole destination (a worker goes through the same steps for each
    repository it claims)."""
    run_id = report.run_id
    assert run_id is not None
    whole = Scope(dest)
    await start_copies(plan, report, scope=whole, state=state, run_id=run_id)
    events.plan_ready(plan)
    # Deferred work was taken first by the plan and stays recorded until the run has ended: what this run did
    # not defer again, for every repository of this destination, goes once the copies are done.
    await copy_and_follow(
        cfg,
        plan,
        report,
        state=state,
        scope=whole,
        sources=sources,
        events=events,
        control=control,
        run_id=run_id,
        phase="copying signatures and referrers of the mirrored images",
    )
    # This run began with its plan's commit: the commit is synced when everything is done (`close_run`).
    await close_run(
        cfg, plan, report, state=state, dest=dest, sources=sources, events=events, started_commit=plan.commit
    )


__all__ = ["run_sync"]
