"""The copy step: a plan's work items run under one TaskGroup, Docker Hub copies granted pulls in priority
order by the budget, each finished item recorded in the state at once, what cannot be done deferred."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import aiohttp

from .._errors import BudgetExhausted, HubmirrorError, QuotaExceeded
from ..config import SyncConfig
from ..copy import Copier, CopyResult, first_error
from ..media import Descriptor, Manifest
from ..plan import Plan, WorkItem
from ..report import Outcome, SyncReport
from ..state import State
from ..store.mirrored import counting_mirrored
from . import freshness
from .events import RunControl, SyncEvents
from .record import record_copied
from .stores import Destination, Sources

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
    ) -> None:
        self.cfg, self.plan, self.state, self.dest = cfg, plan, state, dest
        self.sources, self.report, self.run_id, self.events = sources, report, run_id, events
        self.hub = sources[cfg.source]
        self.budget = sources.budget
        self.budget.probe = self._probe
        self.budget.on_wait = events.quota_wait
        self._copiers: dict[str, Copier] = {}
        self._sem = semaphore or asyncio.Semaphore(cfg.concurrency)  # shared by runners working at once
        self.stopped: str | None = None  # why no new copy starts (RunControl.stop)
        #: (source_ref, dest key) of every item deferred by this run: the deferred rows to keep.
        self.deferred: set[tuple[str, str]] = set()
        if control is not None:
            control.on_stop(self._stop)

    def _stop(self, reason: str) -> None:
        """No new copy starts (they are deferred with *reason*); pulls set aside for items in flight stay."""
        self.stopped = self.stopped or reason
        self.budget.stopped = self.budget.stopped or reason

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
                self.dest.store,
                concurrency=self.cfg.blob_concurrency,
                events=self.events,
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
                        elif await self.budget.wait_until_fits(passed[0].estimated_pulls):
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

    async def item(self, item: WorkItem) -> None:
        dest_repo = self.dest.key(item.dest_repo)
        if item.kind == "copy" and self.stopped:
            await self._defer(item, self.stopped)
            return
        self.events.item_started(item)
        copier = self.copier(item.source_registry)
        try:
            try:
                with counting_mirrored() as mirrored:
                    result = await copier.copy(
                        item.source_repo,
                        item.upstream_digest,
                        item.dest_repo,
                        item.tags,
                        manifest=await self._kept_index(item),
                        platforms=item.platforms,
                        source=Descriptor(item.media_type, item.upstream_digest, 0),  # the plan's HEAD
                        dest_tags=item.dest_tags if self._fresh() else None,  # the plan's HEADs, if recent
                        events=self.events.item_events(item),
                    )
            finally:
                await self._keep_index(item, copier)
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

    async def _kept_index(self, item: WorkItem) -> Manifest | None:
        """The index an earlier run fetched for *item* and kept in the state (verified), or None."""
        if item.kind != "copy":
            return None
        kept = await self.state.aio.kept_manifest(item.upstream_digest)
        if kept is None:
            return None
        m = Manifest(kept[1], kept[0])
        return m if m.digest == item.upstream_digest and m.is_index else None

    async def _keep_index(self, item: WorkItem, copier: Copier) -> None:
        """Keep the index this item fetched while its copy is not finished; forget it once it is."""
        fetched = copier.fetched_index(item.source_repo, item.upstream_digest)
        if fetched is not None:
            await self.state.aio.keep_manifest(fetched.digest, fetched.media_type, fetched.data)

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


__all__ = ["DEST_TAGS_FRESH", "Runner"]
