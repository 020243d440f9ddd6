"""What a sync tells its caller while it runs (`SyncEvents`), and how the caller stops it (`RunControl`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ..copy import BlobHow, CopyEvents

if TYPE_CHECKING:
    from ..budget import QuotaWait
    from ..media import Descriptor
    from ..plan import Plan, WorkItem
    from ..report import Outcome


class SyncEvents(CopyEvents):
    """Progress callbacks of a sync (all no-ops here); the CLI draws them with rich."""

    def phase(self, text: str) -> None:
        """A new phase begins (reading the library, checking tags, copying, pruning)."""

    def checked(self, done: int, total: int) -> None:
        """The check's HEADs: *done* of *total* tags looked at (called with 0 first, then as each ends)."""

    def quota_wait(self, wait: QuotaWait) -> None:
        """``--wait``: the run waits for the pull quota (``wait.state`` "waiting"), or goes on after it
        ("resumed", "gave_up")."""

    def item_events(self, item: WorkItem) -> CopyEvents:
        """The copy events of *item*'s copy (its blobs, their sizes and bytes); default: these events."""
        return self

    def plan_ready(self, plan: Plan) -> None:
        """The plan is known; copying starts next."""

    def item_started(self, item: WorkItem) -> None:
        """A work item begins."""

    def item_done(self, item: WorkItem, outcome: Outcome) -> None:
        """A work item ended with *outcome*."""


class ItemBytes(CopyEvents):
    """The blob bytes of one work item's copy: ``total`` is the size of the blobs its image manifests list
    (it grows as the copier fetches them), ``done`` what is at the destination (blobs already there or
    mounted count whole). *on_change* is told (done added, total added) at each change."""

    def __init__(self, on_change: Callable[[int, int], None] | None = None) -> None:
        self.total = 0
        self.done = 0
        self.on_change = on_change
        self._sizes: dict[str, int] = {}
        self._counted: dict[str, int] = {}

    def blobs_listed(self, descs: Sequence[Descriptor]) -> None:
        added = 0
        for d in descs:
            if d.digest not in self._sizes:
                self._sizes[d.digest] = max(0, d.size)
                added += max(0, d.size)
        if added:
            self.total += added
            self._changed(0, added)

    def blob_start(self, desc: Descriptor) -> None:
        self._count(desc, 0)  # again from the start on a retry

    def blob_progress(self, desc: Descriptor, nbytes: int) -> None:
        self._count(desc, self._counted.get(desc.digest, 0) + nbytes)

    def blob_done(self, desc: Descriptor, how: BlobHow) -> None:
        self._count(desc, desc.size)

    def _count(self, desc: Descriptor, value: int) -> None:
        if desc.digest not in self._sizes:  # not listed (cannot happen with the copier): count it now
            self.blobs_listed([desc])
        value = min(max(0, value), self._sizes[desc.digest])
        delta = value - self._counted.get(desc.digest, 0)
        if delta:
            self._counted[desc.digest] = value
            self.done += delta
            self._changed(delta, 0)

    def _changed(self, done: int, total: int) -> None:
        if self.on_change is not None:
            self.on_change(done, total)


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


__all__ = ["ItemBytes", "RunControl", "SyncEvents"]
