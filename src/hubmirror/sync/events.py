"""What a sync tells its caller while it runs (`SyncEvents`), and how the caller stops it (`RunControl`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..copy import CopyEvents

if TYPE_CHECKING:
    from ..plan import Plan, WorkItem
    from ..report import Outcome


class SyncEvents(CopyEvents):
    """Progress callbacks of a sync (all no-ops here); the CLI draws them with rich."""

    def phase(self, text: str) -> None:
        """A new phase begins (reading the library, checking tags, copying, pruning)."""

    def plan_ready(self, plan: Plan) -> None:
        """The plan is known; copying starts next."""

    def item_started(self, item: WorkItem) -> None:
        """A work item begins."""

    def item_done(self, item: WorkItem, outcome: Outcome) -> None:
        """A work item ended with *outcome*."""


class RunControl:
    """Stops a run gracefully from outside (the server on SIGTERM, ``hubmirror sync`` on SIGINT or SIGTERM):
    items in flight finish and are recorded; copies not yet started are deferred (the next run takes them
    first). The run keeps `copying` and `in_flight` up to date for the caller's message."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self._listeners: list[Callable[[str], None]] = []
        #: The plan is made and the copies have begun (before: nothing was changed yet).
        self.copying = False
        #: Work items being copied now.
        self.in_flight = 0

    def stop(self, reason: str) -> None:
        """Ask the run to stop after the items in flight; *reason* is what deferred items say."""
        if self.reason is None:
            self.reason = reason
            for listener in self._listeners:
                listener(reason)

    def on_stop(self, listener: Callable[[str], None]) -> None:
        """Call *listener* with the reason when `stop` is called (at once if it already was)."""
        self._listeners.append(listener)
        if self.reason is not None:
            listener(self.reason)


__all__ = ["RunControl", "SyncEvents"]
