"""Highly available ``hubmirror serve``: replicas on one PostgreSQL state, one of which schedules.

Every replica answers the status page, the API and webhooks. Exactly one, the *scheduler*, runs syncs: the
one that holds a session advisory lock of the job (`State.lead_scheduler`) on a connection of its own, kept
open for as long as it leads. PostgreSQL drops the lock when that connection ends (the process died, was
SIGKILLed, or its node was lost: TCP keepalives end the connection), and another replica, trying every
`RETRY` seconds, takes it over. The scheduler checks its lock as often; a replica that loses it stops
scheduling at once.

A trigger accepted by any replica is a row of the state (`State.add_trigger`); the scheduler takes the rows
waiting when it starts its next run (`State.take_triggers`), so a trigger survives the death of the scheduler
that would have run it; a webhook delivery is remembered in the same transaction, so that one any replica
accepted starts nothing when it reaches another. With a SQLite state there is no `Replicas`: one process,
which schedules.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from .._errors import HubmirrorError
from ..config import SyncConfig
from ..state import State

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds between a replica's attempts to become the scheduler, and between the scheduler's checks of its
#: lock: a scheduler that dies is replaced within about this (plus the server's notice of the lost
#: connection: at once for a killed process, about 30 s of TCP keepalives for a lost node).
RETRY = 5.0
#: Seconds a round trip to the state may take before the replica counts its lock as lost.
CHECK_TIMEOUT = 15.0
#: Seconds a trigger's write to the state may take before the request is answered 503.
SUBMIT_TIMEOUT = 30.0


def replica_name() -> str:
    """This replica, as the status page and the scheduler's connection name it: host (a pod's name) and pid."""
    return f"{socket.gethostname()} pid {os.getpid()}"


async def _in_thread(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` on a daemon thread of its own: a call stuck on a lost network never holds up the exit."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if done.cancelled():
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)  # type: ignore[arg-type]

    def work() -> None:
        try:
            result = fn(*args)
        except BaseException as e:  # handed to the awaiting task
            loop.call_soon_threadsafe(settle, None, e)
        else:
            loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=work, name="hubmirror-scheduler", daemon=True).start()
    return await done


def _close(state: State | None) -> None:
    """Close *state* on a daemon thread (a connection stuck on a lost network must not hold anything up)."""
    if state is None:
        return

    def close() -> None:
        with contextlib.suppress(Exception):
            state.close()

    threading.Thread(target=close, name="hubmirror-scheduler-close", daemon=True).start()


class Replicas:
    """This replica's part in the election of the scheduler of ``cfg``'s job, and the triggers it shares."""

    def __init__(self, cfg: SyncConfig, *, replica: str | None = None, retry: float = RETRY) -> None:
        self.cfg = cfg
        self.job = cfg.job_id
        self.replica = replica or replica_name()
        self.retry = retry
        #: True while this replica schedules.
        self.leader = False
        #: When this replica last became the scheduler (None: it does not schedule).
        self.since: datetime | None = None
        #: Called with True when this replica becomes the scheduler, with False when it stops being it.
        self.on_change: Callable[[bool], None] | None = None
        self._lock: State | None = None  # the connection that holds (or tries for) the lock
        self._db: State | None = None  # the connection for triggers
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    # -- election -----------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._elect(), name="hubmirror-scheduler-election")

    async def close(self) -> None:
        """Stop electing and give up the lock (its connection is closed: another replica takes over)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._set(False, "hubmirror serve is stopping")
        lock, self._lock = self._lock, None
        db, self._db = self._db, None
        for state in (lock, db):
            if state is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(_in_thread(state.close), 5)

    async def _elect(self) -> None:
        while True:
            try:
                await self.step()
            except Exception:  # a bug: say what it was and keep electing (a replica must not go silent)
                log.exception("the election of the scheduler failed; retrying in %g s", self.retry)
            await asyncio.sleep(self.retry)

    async def step(self) -> None:
        """One attempt to become the scheduler, or one check that this replica still is."""
        try:
            if self._lock is None:
                self._lock = await asyncio.wait_for(_in_thread(State.open, self.cfg.state), CHECK_TIMEOUT)
            lock = self._lock
            if self.leader:
                held = await asyncio.wait_for(_in_thread(lock.leads_scheduler, self.job), CHECK_TIMEOUT)
                if not held:
                    self._set(False, "its lock was released")
            else:
                got = await asyncio.wait_for(_in_thread(lock.lead_scheduler, self.job, self.replica), CHECK_TIMEOUT)
                if got:
                    self._set(True, "it holds the scheduler lock")
            if self._failing:
                log.info("the state can be reached again", extra={"fields": {"event": "state_reachable"}})
            self._failing = False
        except (HubmirrorError, TimeoutError) as e:
            why = str(e) or f"no answer from the state within {CHECK_TIMEOUT:g} s"
            if self.leader:
                self._set(False, f"its connection to the state was lost ({why})")
            elif not self._failing:
                log.warning(
                    "cannot take part in the election of the scheduler: %s; retrying every %g s",
                    why,
                    self.retry,
                    extra={"fields": {"event": "election_failed", "error": why}},
                )
            self._failing = True
            lost, self._lock = self._lock, None
            _close(lost)

    def _set(self, leader: bool, why: str) -> None:
        if leader == self.leader:
            return
        self.leader = leader
        self.since = datetime.now(UTC) if leader else None
        if leader:
            log.info(
                "this replica (%s) schedules the runs: %s",
                self.replica,
                why,
                extra={"fields": {"event": "scheduler_elected", "replica": self.replica}},
            )
        else:
            log.warning(
                "this replica (%s) no longer schedules the runs: %s",
                self.replica,
                why,
                extra={"fields": {"event": "scheduler_lost", "replica": self.replica, "reason": why}},
            )
        if self.on_change is not None:
            self.on_change(leader)

    # -- triggers -----------------------------------------------------------------------------------

    async def _call(self, fn: Callable[[State], T]) -> T:
        """``fn(state)`` on the triggers' connection (opened on first use, opened again after an error)."""
        if self._db is None:
            self._db = await _in_thread(State.open, self.cfg.state)
        db = self._db
        try:
            return await _in_thread(fn, db)
        except HubmirrorError:
            self._db = None
            _close(db)
            raise

    async def submit(
        self, reason: str, repositories: Sequence[str] | None, *, deliveries: Sequence[str] = (), remember: int = 4096
    ) -> int | None:
        """Write a trigger for the scheduler; how many wait now (None: too many wait; 0: one of the webhook
        *deliveries* was seen before, by any replica: nothing was added). `HubmirrorError` (or `TimeoutError`)
        if the state cannot be written."""
        job, replica = self.job, self.replica
        return await asyncio.wait_for(
            self._call(
                lambda st: st.add_trigger(job, reason, repositories, replica, deliveries=deliveries, remember=remember)
            ),
            SUBMIT_TIMEOUT,
        )

    async def take(self) -> list[tuple[str, list[str] | None, int]]:
        """The triggers waiting, taken for the next run (the scheduler only)."""
        job = self.job
        return await asyncio.wait_for(self._call(lambda st: st.take_triggers(job)), SUBMIT_TIMEOUT)


__all__ = ["CHECK_TIMEOUT", "RETRY", "Replicas", "replica_name"]
