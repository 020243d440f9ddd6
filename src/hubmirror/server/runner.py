"""The server's run loop: one sync at a time (single flight), triggered by the cron schedule, webhooks and
the API; triggers that arrive during a run are merged into one follow-up run.

With `Replicas` (a PostgreSQL state), only the replica elected scheduler runs syncs and follows the schedule;
triggers go through the state (`SyncLoop.submit`), and the scheduler takes them when its next run starts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .. import runlog
from .._errors import HubmirrorError
from ..budget import QuotaWait
from ..config import SyncConfig
from ..copy import CopyEvents
from ..plan import Plan, WorkItem
from ..report import Outcome, SyncReport
from ..schedule import next_run
from ..service import RunResult, SyncService
from ..sync import ItemBytes, RunControl, SyncEvents
from .replicas import Replicas

log = logging.getLogger(__name__)

#: What items deferred by a shutdown say (the next run takes them first).
SHUTDOWN_REASON = "hubmirror serve was stopped during the run; the next run takes this first"
#: Triggers waiting for the next run merge into it: the reasons of this many (distinct) are kept, with how
#: often each came; the rest are only counted.
PENDING_REASONS = 10
#: Seconds between the scheduler's looks at the triggers other replicas wrote to the state (when idle).
POLL = 1.0
#: The trigger of the run a replica starts when it becomes the scheduler (as a lone server runs at start).
ELECTED_REASON = "elected scheduler"


@dataclass
class LiveRun:
    """The run in progress, as its events tell it (the status page shows it live)."""

    number: int  # this server's run counter (1 = the first run since start)
    triggers: list[str]
    #: A run for chosen repositories only (POST /api/sync {"repositories": [...]}); None: the whole selection.
    repositories: list[str] | None = None
    started: datetime = field(default_factory=lambda: datetime.now(UTC))  # when the run began (planning)
    copying_started: datetime | None = None  # when planning ended and copying began
    phase: str = "starting"
    planned: bool = False
    checked: int = 0  # the check's tags looked at (manifest HEADs), of `to_check`
    to_check: int = 0
    bytes_done: int = 0  # blob bytes of the items started, at the destination …
    bytes_total: int = 0  # … of those their manifests list so far
    waiting: dict[str, Any] | None = None  # a wait for the pull quota in progress (`QuotaWait.fields`)
    commit: str | None = None
    to_copy: int = 0
    to_retag: int = 0
    up_to_date: int = 0
    total: int = 0
    done: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    in_flight: dict[int, str] = field(default_factory=dict)
    item_bytes: dict[int, ItemBytes] = field(default_factory=dict)
    stopping: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "triggers": self.triggers,
            "repositories": self.repositories,
            "started": self.started.isoformat(),
            "began": self.started.isoformat(),
            "copying_started": self.copying_started.isoformat() if self.copying_started else None,
            "elapsed": round((datetime.now(UTC) - self.started).total_seconds(), 1),
            "phase": self.phase,
            "tags_checked": self.checked,
            "tags_to_check": self.to_check,
            "bytes_done": self.bytes_done,
            "bytes_total": self.bytes_total,
            "in_flight_bytes": {
                self.in_flight[k]: [b.done, b.total] for k, b in self.item_bytes.items() if k in self.in_flight
            },
            "waiting": self.waiting,
            "commit": self.commit,
            "to_copy": self.to_copy,
            "to_retag": self.to_retag,
            "up_to_date": self.up_to_date,
            "items_total": self.total,
            "items_done": self.done,
            "outcomes": dict(self.outcomes),
            "in_flight": sorted(self.in_flight.values()),
            "stopping": self.stopping,
        }


class _LiveEvents(SyncEvents):
    def __init__(self, live: LiveRun) -> None:
        self.live = live

    def phase(self, text: str) -> None:
        self.live.phase = text

    def checked(self, done: int, total: int) -> None:
        self.live.checked, self.live.to_check = done, total

    def quota_wait(self, wait: QuotaWait) -> None:
        self.live.waiting = wait.fields() if wait.state == "waiting" else None
        (runlog.quota_wait if wait.state != "resumed" else runlog.quota_resumed)(wait)

    def plan_ready(self, plan: Plan) -> None:
        live = self.live
        live.planned, live.commit, live.phase = True, plan.commit, "copying"
        live.copying_started = datetime.now(UTC)
        live.to_copy, live.to_retag, live.up_to_date = len(plan.copies), len(plan.retags), len(plan.up_to_date)
        live.total = len(plan.items)

    def item_started(self, item: WorkItem) -> None:
        self.live.in_flight[id(item)] = item.canonical

    def item_events(self, item: WorkItem) -> CopyEvents:
        live = self.live

        def changed(done: int, total: int) -> None:
            live.bytes_done += done
            live.bytes_total += total

        counter = live.item_bytes[id(item)] = ItemBytes(changed)
        return counter

    def item_done(self, item: WorkItem, outcome: Outcome) -> None:
        self.live.in_flight.pop(id(item), None)
        self.live.item_bytes.pop(id(item), None)
        self.live.done += 1
        self.live.outcomes[outcome.value] += 1


@dataclass
class FinishedRun:
    """A run this server did: its result, with why it ran."""

    number: int
    triggers: list[str]
    started: datetime
    finished: datetime
    result: RunResult | None  # None: cancelled before it changed anything (shutdown during planning)


class SyncLoop:
    """Runs `SyncService` syncs one at a time for a server; `trigger` asks for a run."""

    def __init__(
        self,
        cfg: SyncConfig,
        service: SyncService,
        *,
        history: int = 50,
        stop_grace: float = 90.0,
        replicas: Replicas | None = None,
    ) -> None:
        self.cfg = cfg
        #: The election of the scheduler among the replicas on one PostgreSQL state (None: this process alone
        #: schedules, as with a SQLite state).
        self.replicas = replicas
        self._run_now = True
        self.stop_grace = stop_grace  # how long `shutdown` lets the items in flight finish before cancelling
        self.service = service
        self.current: LiveRun | None = None
        self.finished: deque[FinishedRun] = deque(maxlen=history)
        self.last_report: SyncReport | None = None
        self.next_scheduled: datetime | None = None
        self.runs_started = 0
        self.stopping = False
        self._pending: dict[str, int] = {}  # the first PENDING_REASONS reasons → how many triggers gave each
        self._pending_count = 0
        self._pending_full = False  # a pending trigger asked for the whole selection
        self._pending_repos: set[str] = set()  # … else the repositories the pending triggers asked for
        self._wake = asyncio.Event()
        self._control: RunControl | None = None
        self._task: asyncio.Task[RunResult] | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._cron_task: asyncio.Task[None] | None = None

    # -- triggers ---------------------------------------------------------------------------------

    @property
    def pending(self) -> list[str]:
        """Reasons of the triggers waiting for the next run (merged into one run): at most `PENDING_REASONS`
        (``api (×3)`` for a reason given more than once), then how many other triggers there are."""
        shown = [f"{r} (×{n})" if n > 1 else r for r, n in self._pending.items()]
        others = self._pending_count - sum(self._pending.values())
        if others:
            shown.append(f"{others} more trigger{'s' if others > 1 else ''}")
        return shown

    @property
    def pending_count(self) -> int:
        """How many triggers wait for the next run."""
        return self._pending_count

    @property
    def leads(self) -> bool:
        """Whether this process schedules the runs (always, without replicas)."""
        return self.replicas is None or self.replicas.leader

    async def submit(
        self,
        reason: str,
        repositories: Iterable[str] | None = None,
        *,
        deliveries: Sequence[str] = (),
        remember: int = 4096,
    ) -> tuple[str, int]:
        """Ask for a run as a request does: `trigger` without replicas; with replicas, a trigger written to the
        state for the scheduler (this replica or another): ``started`` (this replica schedules and is idle),
        ``queued``, ``full`` (too many triggers wait already), ``seen`` (one of the webhook *deliveries* was
        accepted before by a replica; the state keeps the newest *remember*) or ``refused``. Also how many
        triggers wait. `HubmirrorError` or `TimeoutError` when the state cannot be written."""
        if self.replicas is None or self.stopping:
            return self.trigger(reason, repositories), self.pending_count
        repos = sorted(set(repositories)) if repositories is not None else None
        waiting = await self.replicas.submit(reason, repos, deliveries=deliveries, remember=remember)
        if waiting is None:
            return "full", self.pending_count
        if waiting == 0:
            return "seen", self.pending_count
        if self.leads:
            self._wake.set()
            idle = self.current is None and not self._pending_count and waiting <= 1
            return ("started" if idle else "queued"), waiting + self._pending_count
        return "queued", waiting

    def trigger(self, reason: str, repositories: Iterable[str] | None = None) -> str:
        """Ask for a run: ``started`` (none was running), ``queued`` (it follows the run in progress; further
        triggers merge into it) or ``refused`` (shutting down). With *repositories*, a run that checks and
        copies only those (merged triggers: their repositories together, or the whole selection if one asked
        for it)."""
        if self.stopping:
            return "refused"
        queued = self.current is not None or self._pending_count > 0
        self._add(reason, repositories)
        self._wake.set()
        return "queued" if queued else "started"

    def _add(self, reason: str, repositories: Iterable[str] | None, times: int = 1) -> None:
        if repositories is None:
            self._pending_full = True
        else:
            self._pending_repos.update(repositories)
        self._pending_count += times
        if reason in self._pending or len(self._pending) < PENDING_REASONS:
            self._pending[reason] = self._pending.get(reason, 0) + times

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self, *, run_now: bool = True) -> None:
        """Start the run loop (and the schedule, if the config has one); with *run_now*, a first run now. With
        replicas: the election too, and a first run when this replica becomes the scheduler."""
        self._loop_task = asyncio.create_task(self._loop(), name="hubmirror-sync-loop")
        if self.cfg.schedule:
            self._cron_task = asyncio.create_task(self._cron(self.cfg.schedule), name="hubmirror-schedule")
        self._run_now = run_now
        if self.replicas is not None:
            self.replicas.on_change = self._elected
            self.service.metrics.set_scheduler_leader(False)
            self.replicas.start()
        else:
            self.service.metrics.set_scheduler_leader(True)
            if run_now:
                self.trigger("start")

    def _elected(self, leader: bool) -> None:
        """This replica became the scheduler (it runs now, as a lone server does at start), or stopped being it
        (its run in progress goes on: a PostgreSQL state's workers share a run)."""
        self.service.metrics.set_scheduler_leader(leader)
        if leader and self._run_now and not self.stopping:
            self.trigger(ELECTED_REASON)

    @property
    def alive(self) -> bool:
        return self._loop_task is not None and not self._loop_task.done()

    async def shutdown(self) -> None:
        """Stop: no new run starts; a run in progress finishes the items in flight and records its state
        (copies not started are deferred), or is cancelled after `stop_grace` seconds (tags already pushed
        stay recorded; the run is marked interrupted by the next); a run still planning is cancelled (it
        changed nothing yet)."""
        self.stopping = True
        self._pending.clear()
        self._pending_count = 0
        self._pending_full, self._pending_repos = False, set()
        if self._cron_task is not None:
            self._cron_task.cancel()
        if self.replicas is not None:  # another replica schedules from now (triggers wait in the state)
            await self.replicas.close()
        live = self.current
        if live is not None and self._task is not None:
            if live.planned:
                live.stopping = "finishing the items in flight, then stopping"
                assert self._control is not None
                self._control.stop(SHUTDOWN_REASON)
                task = self._task
                try:  # a run waiting for the quota window (wait: true) would not end by itself
                    await asyncio.wait_for(asyncio.shield(task), self.stop_grace)
                except TimeoutError:
                    log.warning("the run did not stop within %.0f s; cancelling it", self.stop_grace)
                    task.cancel()
                except BaseException:  # the run's own outcome is handled by _run
                    pass
            else:
                live.stopping = "cancelled while planning (nothing was changed)"
                self._task.cancel()
        self._wake.set()
        if self._loop_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        if self._cron_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._cron_task

    async def _cron(self, schedule: str) -> None:
        while True:
            nxt = next_run(schedule, datetime.now().astimezone())
            self.next_scheduled = nxt.astimezone(UTC)
            await asyncio.sleep(max(0.0, nxt.timestamp() - time.time()))
            if self.leads:  # the other replicas only show when the scheduler runs next
                self.trigger("schedule")

    async def _loop(self) -> None:
        while not self.stopping:
            if self.replicas is None:
                await self._wake.wait()
            else:  # triggers may come through the state from other replicas
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), POLL)
            self._wake.clear()
            if self.stopping:
                continue
            if self.replicas is not None:
                if not self.replicas.leader:
                    continue
                try:
                    taken = await self.replicas.take()
                except (HubmirrorError, TimeoutError) as e:
                    log.warning("cannot read the triggers from the state: %s", e or "no answer in time")
                    await asyncio.sleep(POLL)
                    continue
                for reason, repositories, times in taken:
                    self._add(reason, repositories, times)
            if self.stopping or not self._pending_count:
                continue
            reasons = self.pending
            only = None if self._pending_full or not self._pending_repos else sorted(self._pending_repos)
            self._pending, self._pending_count = {}, 0
            self._pending_full, self._pending_repos = False, set()
            await self._run(reasons, only)

    async def _run(self, reasons: list[str], only: list[str] | None = None) -> None:
        self.runs_started += 1
        live = LiveRun(self.runs_started, reasons, repositories=only)
        cfg = self.cfg if only is None else self.cfg.only(only)
        self.current = live
        runlog.run_started(
            live.number, reasons, library=self.cfg.library if self.cfg.reads_library else None, dest=self.cfg.dest
        )
        self._control = RunControl()
        self.service.metrics.in_progress.set(1)
        self._task = asyncio.create_task(self.service.run(cfg, events=_LiveEvents(live), control=self._control))
        result: RunResult | None
        try:
            result = await asyncio.shield(self._task)
        except asyncio.CancelledError:
            if not self._task.cancelled():
                raise
            result = None
        except Exception:  # a bug, not a run outcome: keep serving, say what it was
            log.exception("sync run %d crashed", live.number)
            result = RunResult(error="internal error (see the server log)")
        finally:
            self.service.metrics.in_progress.set(0)
            self.current = None
            self._task = None
        self.finished.appendleft(FinishedRun(live.number, reasons, live.started, datetime.now(UTC), result))
        if result is not None and result.report is not None:
            self.last_report = result.report
        if result is None:
            runlog.run_cancelled(live.number, reasons, began=live.started)
        else:
            runlog.run_finished(result, live.number, reasons, began=live.started)


__all__ = ["ELECTED_REASON", "PENDING_REASONS", "SHUTDOWN_REASON", "FinishedRun", "LiveRun", "SyncLoop"]
