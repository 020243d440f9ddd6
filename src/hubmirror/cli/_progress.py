"""Progress displays of ``copy`` and ``sync`` (rich), imported only when a command runs."""

from __future__ import annotations

from rich.filesize import decimal
from rich.progress import MofNCompleteColumn, Progress, ProgressColumn, Task, TaskID
from rich.text import Text

from ..budget import QuotaWait
from ..copy import BlobHow, CopyEvents
from ..media import Descriptor
from ..plan import Plan, WorkItem
from ..report import Outcome
from ..sync import ItemBytes, SyncEvents
from ._app import console


class AmountColumn(ProgressColumn):
    """``done/total``: counts, or for a task with ``bytes=True`` sizes (``12.3 MB/40.1 MB``; ``?`` until
    the copier knows the blob sizes)."""

    def __init__(self) -> None:
        super().__init__()
        self._count = MofNCompleteColumn()

    def render(self, task: Task) -> Text:
        if not task.fields.get("bytes"):
            return self._count.render(task)
        if not task.total:
            return Text(f"{decimal(int(task.completed))}/?", style="progress.download")
        return Text(f"{decimal(int(task.completed))}/{decimal(int(task.total))}", style="progress.download")


class BlobProgress(CopyEvents):
    """One progress bar per blob in flight, removed when the blob is done."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, TaskID] = {}

    def blob_start(self, desc: Descriptor) -> None:
        task = self.tasks.get(desc.digest)
        if task is None:
            name = desc.digest.split(":", 1)[-1][:12]
            self.tasks[desc.digest] = self.progress.add_task(name, total=desc.size)
        else:
            self.progress.reset(task, total=desc.size)

    def blob_progress(self, desc: Descriptor, nbytes: int) -> None:
        task = self.tasks.get(desc.digest)
        if task is not None:
            self.progress.advance(task, nbytes)

    def blob_done(self, desc: Descriptor, how: BlobHow) -> None:
        task = self.tasks.pop(desc.digest, None)
        if task is not None:
            self.progress.remove_task(task)


class RichEvents(SyncEvents):
    """Progress on stderr: one bar for the whole run, one line per image being copied."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.overall: TaskID | None = None
        self.checking: TaskID | None = None
        self.tasks: dict[int, TaskID] = {}

    def phase(self, text: str) -> None:
        console.print(Text(text, style="dim"))

    def checked(self, done: int, total: int) -> None:
        if self.checking is None:
            if done >= total:
                return
            self.checking = self.progress.add_task("checking tags", total=total)
        self.progress.update(self.checking, completed=done)
        if done >= total:
            self.progress.remove_task(self.checking)
            self.checking = None

    def quota_wait(self, wait: QuotaWait) -> None:
        # A line on and off a terminal: a run that waits for minutes says what for and until when.
        console.print(Text(wait.text(), style="yellow" if wait.state != "resumed" else ""), soft_wrap=True)

    def item_events(self, item: WorkItem) -> CopyEvents:
        task = self.tasks.get(id(item))
        if task is None:
            return self

        def changed(done: int, total: int) -> None:
            if task in self.progress.task_ids:
                self.progress.update(task, total=counter.total or None, completed=counter.done)

        counter = ItemBytes(changed)
        return counter

    def plan_ready(self, plan: Plan) -> None:
        console.print(
            f"plan: {len(plan.copies)} to copy, {len(plan.retags)} to retag, {len(plan.up_to_date)} tags up to date,"
            f" ~{plan.pulls_needed} pulls"
            + (f", up to {plan.mirror_manifests} manifests from mirrors" if plan.mirror_manifests else "")
        )
        if plan.items:
            self.overall = self.progress.add_task("images", total=len(plan.items))

    def item_started(self, item: WorkItem) -> None:
        self.tasks[id(item)] = self.progress.add_task(f"  {item.canonical}", total=None, bytes=True)

    def item_done(self, item: WorkItem, outcome: Outcome) -> None:
        task = self.tasks.pop(id(item), None)
        if task is not None:
            self.progress.remove_task(task)
        if self.overall is not None:
            self.progress.advance(self.overall)
        if outcome in (Outcome.FAILED, Outcome.DEFERRED):
            console.print(f"[yellow]{outcome.value}[/]: {item.canonical}")
