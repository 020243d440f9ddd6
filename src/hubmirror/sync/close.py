"""The close of a run, once every copy is done: by the single process, or by the last worker of a run shared
by several (`hubmirror.sync.worker`), for all of them. Prune what left the selection, settle freshness,
finish the report, record the library commit when everything is done, and the end of the run."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

from ..config import SyncConfig
from ..plan import Plan
from ..report import EXIT_DONE, SyncReport
from ..state import State
from . import freshness
from .events import SyncEvents
from .prune import prune
from .reporting import finish_report
from .stores import Destination, Sources


async def close_run(
    cfg: SyncConfig,
    plan: Plan,
    report: SyncReport,
    *,
    state: State,
    dest: Destination,
    sources: Sources,
    events: SyncEvents,
    started_commit: str | None,
    whole_run: Callable[[], Awaitable[dict[str, Any]]] | None = None,
) -> None:
    """Close run ``report.run_id`` of the whole selection's *plan* (its prune blockers known: `block_prune`):

    * prune (with ``--prune``; what left the selection is found again from the state after the copies);
    * freshness: why what is pending still waits, and how old the oldest is (`freshness.finish`);
    * the report finished (its totals); *whole_run*, for a run shared by workers, gives the run's part of it
      (every worker's summary added up: `SyncReport.run`), whose exit code counts too;
    * the library commit recorded as synced when everything is done, nothing made the selection doubtful,
      and the run started from that commit (*started_commit*: a worker that joined later may have read a
      newer one), so that the next run looks at it again otherwise;
    * the run's end in the state: its status and totals (every worker's, for a shared run).
    """
    run_id = report.run_id
    assert run_id is not None
    await prune(
        plan, state=state, dest=dest, report=report, enabled=cfg.prune, events=events, max_delete=cfg.max_delete
    )
    await freshness.finish(plan, report, state=state, dest=dest)
    finish_report(report, sources, dest, cfg)
    if whole_run is not None:
        report.run = await whole_run()
    done = report.exit_code == EXIT_DONE and not plan.prune_blockers
    if done and plan.commit is not None and plan.commit == started_commit:
        await state.aio.set_library_commit(cfg.library, plan.commit)
    await state.aio.finish_run(run_id, report.run_status, run_totals(report), commit=plan.commit)


def run_totals(report: SyncReport) -> dict[str, Any]:
    """The totals the state records for the run: the report's, or for a run shared by workers every worker's
    added up (`SyncReport.run`), with the quota as this worker last saw it."""
    if report.run is None:
        return asdict(report.totals)
    totals = dict(report.run["totals"])
    totals.update(
        ratelimit_remaining=report.totals.ratelimit_remaining,
        ratelimit_limit=report.totals.ratelimit_limit,
        ratelimit_window=report.totals.ratelimit_window,
    )
    return totals


__all__ = ["close_run", "run_totals"]
