"""The copy step: a plan's work items run under one TaskGroup, Docker Hub copies granted pulls in priority
order by the budget, each tag recorded in the state as it is pushed (an intent before the PUT, the record
after it: `ItemJournal`), what cannot be done deferred. A destination that keeps failing the same way stops
the run's pulls (`DestinationBreaker`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import aiohttp

from .._errors import BudgetExhausted, HubmirrorError, QuotaExceeded, StateUnavailable
from ..config import SyncConfig
from ..copy import BlobLedger, Copier, CopyResult, first_error, shielded
from ..media import Descriptor
from ..plan import Plan, WorkItem
from ..referrers import follow_referrers
from ..report import Outcome, SyncReport
from ..state import State
from ..store.mirrored import counting_mirrored
from . import freshness
from .breaker import DestinationBreaker, DestinationWatch, Tripped, failure_kind
from .events import RunControl, SyncEvents
from .journal import FollowJournal, ItemJournal
from .record import record_copied, record_followed
from .stores import Destination, Scope, Sources

log = logging.getLogger(__name__)

#: Seconds the plan's HEADs of destination tags stand for them (the copier does not HEAD them again).
DEST_TAGS_FRESH = 300.0


class Runner:
    """Executes a plan's work items with one `Copier` per source registry.

    Items run concurrently under one `asyncio.TaskGroup`: an unexpected error cancels the others and
    reaches the caller only once they have stopped, so the state and stores are never closed under an
    item still running. Copies from the Docker Hub source are granted pulls in priority order
    (`PullBudget.grant`): one that does not fit is passed over and smaller ones are taken; when items
    finish under their estimate, what they gave back is offered to the passed-over ones.
    """

    def __init__(
        self,
        cfg: SyncConfig,
        plan: Plan,
        *,
        state: State,
        dest: Destination,
        sources: Sources,
        report: SyncReport,
        run_id: int,
        events: SyncEvents,
        control: RunControl | None = None,
        semaphore: asyncio.Semaphore | None = None,
        ledger: BlobLedger | None = None,
    ) -> None:
        self.cfg, self.plan, self.state, self.dest = cfg, plan, state, dest
        self.ledger = ledger  # the blobs other workers of the run placed or are transferring (a worker's)
        self.sources, self.report, self.run_id, self.events = sources, report, run_id, events
        self.hub = sources[cfg.source]
        self.budget = sources.budget
        self.budget.probe = self._probe
        self.budget.on_wait = events.quota_wait
        self._copiers: dict[str, Copier] = {}
        self._sem = semaphore or asyncio.Semaphore(cfg.concurrency)  # shared by runners working at once
        self.stopped: str | None = None  # why no new copy starts (RunControl.stop, a failing destination)
        self._stopping = asyncio.Event()
        #: (source_ref, dest key) of every item deferred by this run: the deferred rows to keep.
        self.deferred: set[tuple[str, str]] = set()
        self.control = control
        self.in_flight = 0
        #: Copies go through this view of the destination: its failures are counted (`DestinationBreaker`).
        self.breaker = DestinationBreaker(self._trip)
        self.dest_store = DestinationWatch(dest.store, self.breaker)
        #: Items that failed the way the tripped destination fails: deferred rows (taken first next run).
        self._dest_failed: list[tuple[WorkItem, str, str]] = []
        if control is not None:
            control.on_stop(self._stop)

    def _stop(self, reason: str) -> None:
        """No new copy starts (they are deferred with *reason*); pulls set aside for items in flight stay."""
        self.stopped = self.stopped or reason
        self.budget.stopped = self.budget.stopped or reason
        self._stopping.set()

    def _trip(self, tripped: Tripped) -> None:
        """The destination failed the same way too often: no new copy starts, and no pull is granted any
        more, not even to items in flight (what they fetched is kept in the state for the next run)."""
        reason = f"destination {self.dest.name} failing ({tripped.kind}): {tripped.first}"
        log.warning("%s; no more pulls in this run", reason)
        self._stop(reason)
        self.budget.stop(reason)

    async def _probe(self) -> None:
        """A free HEAD on the source, to re-read the quota while waiting."""
        t = next((t for t in self.plan.targets if t.source_registry == self.cfg.source), None)
        if t is not None:
            with contextlib.suppress(HubmirrorError):
                await self.hub.head_manifest(t.source_repo, t.source_ref)

    def copier(self, registry: str) -> Copier:
        if registry not in self._copiers:
            self._copiers[registry] = Copier(
                self.sources[registry],
                self.dest_store,
                concurrency=self.cfg.blob_concurrency,
                events=self.events,
                ledger=self.ledger,
            )
        return self._copiers[registry]

    async def run(self) -> None:
        budgeted = [i for i in self.plan.items if i.kind == "copy" and self.sources.is_hub(i.source_registry)]
        ids = {id(i) for i in budgeted}
        try:
            async with asyncio.TaskGroup() as tg:
                for item in self.plan.items:  # retags and other registries' copies: no Hub pulls
                    if id(item) not in ids:
                        tg.create_task(self._one(item, 0))
                pending = budgeted
                while pending and self.stopped is None:
                    granted: list[tuple[WorkItem, int]] = []
                    passed: list[WorkItem] = []
                    for item in pending:
                        n = self.budget.grant(item.estimated_pulls)
                        if n is None:
                            passed.append(item)
                        else:
                            granted.append((item, n))
                    if not granted and passed:
                        # Nothing fits whole: what is left begins the first item passed over (what it
                        # fetches stays done), or with --wait, wait for the window.
                        rest = self.budget.grant_rest()
                        if rest:
                            granted, passed = [(passed[0], rest)], passed[1:]
                        elif await self._wait_for_window(passed[0].estimated_pulls):
                            continue
                    if not granted:
                        break
                    async with asyncio.TaskGroup() as round_tg:
                        for item, n in granted:
                            round_tg.create_task(self._one(item, n))
                    pending = passed
                for item in pending:
                    await self._defer(item, self._why_not(item))
        except BaseExceptionGroup as eg:
            raise first_error(eg) from None
        if self.breaker.tripped is not None:
            await self._destination_failed(self.breaker.tripped)

    async def _wait_for_window(self, estimate: int) -> bool:
        """With --wait: wait for the quota window to let an item of *estimate* pulls start (True), unless
        --max-pulls is what is spent (no window gives more) or the run is stopped meanwhile (False)."""
        if self.cfg.max_pulls is not None and self.budget.granted >= self.cfg.max_pulls:
            return False
        waiting = asyncio.ensure_future(self.budget.wait_until_fits(estimate))
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (waiting, stopping):
                task.cancel()
            await asyncio.gather(waiting, stopping, return_exceptions=True)
        return self.stopped is None and waiting.done() and not waiting.cancelled() and waiting.result()

    async def _destination_failed(self, tripped: Tripped) -> None:
        """The run's one line on a failing destination; the items it failed are taken first next run."""
        pulls = self.budget.granted  # Docker Hub GETs sent (one cancelled in flight too: the Hub counts it)
        self.report.add(
            Outcome.FAILED,
            "--dest",
            self.dest.name,
            reason=(
                f"destination {self.dest.name} failing: {tripped.first}; stopped after {tripped.failures} "
                f"failures, {pulls} pulls spent, nothing more pulled"
            ),
        )
        for item, reason, kind in self._dest_failed:
            if kind != tripped.kind:
                continue
            key = self.dest.key(item.dest_repo)
            self.deferred.add((item.canonical, key))
            await self.state.aio.defer(item.canonical, key, item.tags, reason)

    def _why_not(self, item: WorkItem) -> str:
        if self.stopped:
            return self.stopped
        if self.budget.stopped:
            return self.budget.stopped
        left = self.budget.left()
        rl = self.hub.ratelimit
        quota = f" (quota {rl.remaining} left, keeping a reserve of {self.budget.reserve})" if rl is not None else ""
        return f"needs ~{item.estimated_pulls} pulls, {left} left in this run{quota}"

    async def _one(self, item: WorkItem, granted: int) -> None:
        async with self._sem, self.budget.spending(granted):
            await self.item(item)

    def _count_in_flight(self, n: int) -> None:
        self.in_flight += n
        if self.control is not None:
            self.control.in_flight = self.in_flight

    async def item(self, item: WorkItem) -> None:
        if item.kind == "copy" and self.stopped:
            await self._defer(item, self.stopped)
            return
        self._count_in_flight(1)
        try:
            await self._item(item)
        finally:
            self._count_in_flight(-1)

    async def _item(self, item: WorkItem) -> None:
        dest_repo = self.dest.key(item.dest_repo)
        self.events.item_started(item)
        copier = self.copier(item.source_registry)
        journal = ItemJournal(item, state=self.state, dest=self.dest, run_id=self.run_id)
        done = False
        try:
            try:
                with counting_mirrored() as mirrored:
                    result = await copier.copy(
                        item.source_repo,
                        item.upstream_digest,
                        item.dest_repo,
                        item.tags,
                        platforms=item.platforms,
                        source=Descriptor(item.media_type, item.upstream_digest, 0),  # the plan's HEAD
                        dest_tags=item.dest_tags if self._fresh() else None,  # the plan's HEADs, if recent
                        events=self.events.item_events(item),
                        journal=journal,
                    )
                done = not result.skipped
            finally:
                # shielded: a second Ctrl-C must not lose what this item fetched (nor tear a write)
                await shielded(journal.close(done=done))
            if result.skipped:
                self.report.add(
                    Outcome.FAILED,
                    item.canonical,
                    dest_repo,
                    item.tags,
                    digest=item.upstream_digest,
                    reason=result.skipped,
                )
                self.events.item_done(item, Outcome.FAILED)
                return
            await self._record(item, result)
        except StateUnavailable:  # the state database is gone: the run stops (not one item's failure)
            raise
        except BudgetExhausted as e:
            await self._defer(item, str(e))
            return
        except QuotaExceeded as e:
            # Docker Hub's quota stops the Hub budget; another registry's (a pull-through cache's) stops only
            # that registry's GETs, which its client refuses from now on by itself.
            if self.sources.is_hub(item.source_registry):
                self.budget.stop(f"quota 429 from {item.source_registry}: {e}")
            await self._defer(item, f"quota 429 (toomanyrequests) from {item.source_registry}")
            return
        except (TimeoutError, HubmirrorError, aiohttp.ClientError, OSError) as e:
            reason = str(e) or type(e).__name__
            log.warning("%s: %s", item.canonical, reason)
            kind = failure_kind(e)
            if kind is not None:
                self._dest_failed.append((item, reason, kind))
            self.report.add(
                Outcome.FAILED, item.canonical, dest_repo, item.tags, digest=item.upstream_digest, reason=reason
            )
            self.events.item_done(item, Outcome.FAILED)
            return
        outcome = Outcome.RETAGGED if result.up_to_date else Outcome.COPIED
        self.report.add(
            outcome,
            item.canonical,
            dest_repo,
            item.tags,
            digest=result.source_digest,
            previous_digest=item.previous_digest,
            reason=item.reason if outcome is Outcome.COPIED else None,
            bytes=result.bytes_copied,
            pulls=result.source_manifest_gets - mirrored[0],
            mirrored=mirrored[0],
        )
        self.report.totals.blobs_skipped += result.blobs_skipped
        self.events.item_done(item, outcome)

    def _fresh(self) -> bool:
        """Are the plan's HEADs of the destination tags recent enough to stand for them (no HEAD again)?
        Not after a wait for the quota window: someone may have pushed a tag meanwhile."""
        at = self.plan.checked_at
        return at is not None and time.monotonic() - at < DEST_TAGS_FRESH

    async def _record(self, item: WorkItem, result: CopyResult) -> None:
        await record_copied(item, result, state=self.state, dest=self.dest, run_id=self.run_id)
        await freshness.settle(self.state, self.dest.key(item.dest_repo), item.tags, self.report)

    async def _defer(self, item: WorkItem, reason: str) -> None:
        key = self.dest.key(item.dest_repo)
        self.deferred.add((item.canonical, key))
        await self.state.aio.defer(item.canonical, key, item.tags, reason)
        self.report.add(
            Outcome.DEFERRED,
            item.canonical,
            key,
            item.tags,
            digest=item.upstream_digest,
            previous_digest=item.previous_digest,
            reason=reason,
        )
        self.events.item_done(item, Outcome.DEFERRED)


async def copy_and_follow(
    cfg: SyncConfig,
    plan: Plan,
    report: SyncReport,
    *,
    state: State,
    scope: Scope,
    sources: Sources,
    events: SyncEvents,
    control: RunControl | None,
    run_id: int,
    phase: str | None = None,
    semaphore: asyncio.Semaphore | None = None,
    ledger: BlobLedger | None = None,
) -> Runner:
    """The copy step of *scope* (the whole destination, or a worker's repository): copy the plan's items;
    forget the deferred rows of the destination repositories in *scope* that the copies did not defer again
    (deferred work keeps its priority until its run has ended, so a crash keeps it); then follow the
    signatures and referrers of what was mirrored, announced by *phase*, or, stopped from outside, report
    them deferred (in the scope's name). A worker's copiers share blobs with the other workers through
    *ledger*."""
    dest = scope.dest
    runner = Runner(
        cfg,
        plan,
        state=state,
        dest=dest,
        sources=sources,
        report=report,
        run_id=run_id,
        events=events,
        control=control,
        semaphore=semaphore,
        ledger=ledger,
    )
    await runner.run()
    for d in await state.aio.deferred():
        if scope.holds(d.dest_repo) and (d.source_ref, d.dest_repo) not in runner.deferred:
            await state.aio.clear_deferred(d.source_ref, d.dest_repo)
    if cfg.signatures and runner.stopped is None:
        if phase is not None:
            events.phase(phase)
        followed = await follow_referrers(
            plan,
            report,
            copier=runner.copier,
            sources=sources.__getitem__,
            dest=dest.store,
            dest_key=dest.key,
            listed=True,
            journal=lambda subject: FollowJournal(subject, state=state, dest=dest, run_id=run_id),
        )
        await record_followed(followed, state=state, dest=dest, run_id=run_id)
    elif cfg.signatures and control is not None and control.reason is not None:
        why = f"not followed in this run: {control.reason}"
        report.add(Outcome.DEFERRED, "--signatures", scope.name, reason=why)
    return runner


__all__ = ["DEST_TAGS_FRESH", "Runner", "copy_and_follow"]
