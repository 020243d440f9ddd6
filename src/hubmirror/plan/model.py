"""What a plan is made of: targets (destination tags and their sources), work items, verdicts, the plan."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Literal

from ..budget import allot
from ..platform import Platform
from ..sources import SourceListing
from ..state import TagRecord

if TYPE_CHECKING:  # the library package is loaded only by runs that read it (not --list ones)
    from ..library import LibraryDiff

#: Destination naming: ``flat`` (``docker.io/library/python`` → ``NS/python``, ``ghcr.io/a/b`` → ``NS/a/b``)
#: or ``mirror`` (Docker Hub's paths kept, ``NS/library/python``, other registries under their host name:
#: ``NS/ghcr.io/a/b``), which a containerd, podman or Docker node can use as a drop-in docker.io mirror.
Layout = Literal["flat", "mirror"]
LAYOUTS: tuple[Layout, ...] = ("flat", "mirror")


@dataclass(frozen=True)
class Target:
    """One destination tag, and the source tag whose content it should hold."""

    canonical: str  # the source as users name it: docker.io/library/python:3.13
    source_registry: str  # where it is read from (docker.io replaced by --source)
    source_repo: str  # library/python
    source_ref: str  # tag or digest on the source
    dest_repo: str  # repository inside the destination store: mirror/python
    tag: str | None  # destination tag (None: a digest-only list entry, stored by digest)
    platforms: tuple[Platform, ...] | None = None  # None: copy verbatim; else write a filtered index
    n_platforms: int = 0  # platforms upstream (for the pull estimate), 0 if unknown
    priority: tuple[int, ...] = ()
    #: For a SharedTag: selected platforms no selected entry group brings along. The SharedTag index's
    #: other children are copied by those entries' items, so they cost no pull of its own.
    shared_missing: int | None = None
    #: The source listing gave the tag's digest (Docker Hub's tags API): the check sends no source HEAD.
    known_digest: str | None = None
    known_media_type: str = ""
    #: A tag that never moves (a source's ``immutable`` patterns): once recorded, it is not checked again.
    immutable: bool = False
    #: When upstream last changed the tag, where known: the library commit that changed its entry, Docker Hub's
    #: push time from the tags API. The freshness lag of a change starts there (`hubmirror.sync.freshness`).
    changed_at: datetime | None = None


@dataclass
class WorkItem:
    """Content to bring to one destination repository, and the tags to point at it."""

    source_registry: str
    source_repo: str
    upstream_digest: str
    media_type: str
    dest_repo: str
    targets: list[Target]
    platforms: tuple[Platform, ...] | None
    kind: Literal["copy", "retag"] = "copy"
    reason: str = "new"  # new | changed | rebuilt | deferred | missing | platforms changed | children missing
    previous_digest: str | None = None
    estimated_pulls: int = 1
    #: The source manifest's size from the check's HEAD (0: unknown), a clue to its entries for the estimate.
    size: int = 0
    #: The content mirror found holding the item's top manifest (a free HEAD), whose manifests then cost
    #: no pull; `mirror_manifests` estimates how many it serves.
    mirror: str | None = None
    mirror_manifests: int = 0
    #: Tags that were at the destination before hubmirror recorded them (written with --overwrite, or a
    #: filtered index of an earlier hubmirror whose state is gone): recorded as not created by hubmirror.
    preexisting: set[str] = field(default_factory=set)
    #: What each destination tag pointed at when the plan HEADed it (absent tags left out); the copier
    #: uses it instead of HEADing the tags again while it is fresh (`Plan.checked_at`).
    dest_tags: dict[str, str] = field(default_factory=dict)
    #: Child manifests the destination index of these tags lacks (a repair: the index is there, its
    #: children were deleted): the copy fetches only those.
    missing_children: int = 0

    @property
    def tags(self) -> list[str]:
        return [t.tag for t in self.targets if t.tag is not None]

    @property
    def canonical(self) -> str:
        return self.targets[0].canonical

    @property
    def priority(self) -> tuple[int, ...]:
        return min(t.priority for t in self.targets)


@dataclass
class UpToDate:
    """Destination tags that already hold the source's current content."""

    target: Target
    upstream_digest: str
    dest_digest: str
    recorded: bool  # state already knew exactly this; False: found right at the destination, recorded now
    created: bool = False  # the state's created_by_hubmirror (False for a tag adopted now)


@dataclass
class Conflict:
    """A destination tag hubmirror did not write that holds other content than the source: left as it is."""

    target: Target
    upstream_digest: str
    dest_digest: str


def selection_text(platforms: Sequence[Platform] | None) -> str:
    """How the state records a platform selection: ``""`` for every platform, else sorted and comma-joined."""
    return ",".join(sorted(str(p) for p in platforms)) if platforms else ""


@dataclass
class Affordable:
    """What a run can do with the pulls it has now (`Plan.affordable`)."""

    whole: int = 0  # copies done completely
    started: int = 0  # copies bigger than a window, begun now and continued in later windows
    passed: int = 0  # copies that do not fit now (deferred)
    pulls: int = 0  # pulls spent
    unbudgeted: int = 0  # copies from registries the budget does not count (not Docker Hub)


@dataclass
class Plan:
    """What a run will do. Built with HEADs only: no pulls spent."""

    commit: str | None = None
    previous_commit: str | None = None
    diff: LibraryDiff | None = None
    full_reconcile: bool = False  # the previous commit is unknown or not an ancestor
    targets: list[Target] = field(default_factory=list)
    up_to_date: list[UpToDate] = field(default_factory=list)
    items: list[WorkItem] = field(default_factory=list)
    failed: list[tuple[Target, str]] = field(default_factory=list)
    #: Of the failed targets, those whose source says they do not exist (a 404, or `NotFound`, on the source
    #: HEAD): they leave only their own destination repository in doubt, not the whole selection.
    missing: list[Target] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)  # foreign tags with other content (not --overwrite)
    #: The job running the plan (`SyncConfig.job_id`): prune considers only the tags it owns.
    job: str | None = None
    #: Tags this job alone owns and hubmirror created that left its selection: what prune deletes.
    leaving: list[TagRecord] = field(default_factory=list)
    #: Tags this job owns that left its selection but prune does not delete: another job owns them too (it
    #: still selects them), or hubmirror did not create them. Prune lets go of them (the job no longer owns them).
    released: list[TagRecord] = field(default_factory=list)
    #: The other jobs owning each released tag, for the report.
    co_owners: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)
    sources: list[SourceListing] = field(default_factory=list)  # tag sources: listings and policy decisions
    #: Problems with the selection itself, reported as failures: (what, reason), e.g. ("--images alpah",
    #: "matches no repository …"). Each also blocks prune.
    selection_errors: list[tuple[str, str]] = field(default_factory=list)
    #: Why prune must delete nothing this run. Anything that makes the selection doubtful adds a reason:
    #: a library file that failed to parse, a selection term that matched nothing, a source that failed
    #: to list (`block_prune`); `prune` then deletes nothing and the run exits 1.
    prune_blockers: list[str] = field(default_factory=list)
    #: When `check` HEADed the destination tags (``time.monotonic()``); None before.
    checked_at: float | None = None
    #: The check looked at every child of the indexes it found up to date (``verify_children``) and found
    #: them all at the destination.
    children_checked: bool = False

    def block_prune(self, reason: str) -> None:
        """Make prune refuse this run, with *reason* (a tag source whose listing failed calls this)."""
        if reason not in self.prune_blockers:
            self.prune_blockers.append(reason)

    def selection_error(self, what: str, reason: str) -> None:
        """A selection term or input that selected nothing or could not be read: a failure, and no prune."""
        self.selection_errors.append((what, reason))
        self.block_prune(f"{what}: {reason}")

    @property
    def pulls_needed(self) -> int:
        return sum(i.estimated_pulls for i in self.items)

    @property
    def mirror_manifests(self) -> int:
        """Manifests the content mirrors are expected to serve (no pulls)."""
        return sum(i.mirror_manifests for i in self.items)

    def affordable(
        self, allowance: int | None, capacity: int | None = None, *, budgeted: str | None = None
    ) -> Affordable:
        """What a run with *allowance* pulls would do, as the run does it (`hubmirror.budget.allot`): items in
        priority order, each taking its estimate when it fits; one that does not is passed over and smaller
        ones are taken; one bigger than *capacity* (a whole window less the reserve) gets what is left and
        goes on in later windows, and so does the first one passed over when pulls are left at the end.
        *budgeted*: only copies from that source registry draw on the budget."""
        copies = [i for i in self.copies if budgeted is None or i.source_registry == budgeted]
        grants = allot((i.estimated_pulls for i in copies), allowance, capacity)
        out = Affordable(unbudgeted=len(self.copies) - len(copies))
        for item, granted in zip(copies, grants, strict=True):
            if granted is None:
                out.passed += 1
            elif granted < item.estimated_pulls:
                out.started += 1
                out.pulls += granted
            else:
                out.whole += 1
                out.pulls += item.estimated_pulls
        return out

    @property
    def copies(self) -> list[WorkItem]:
        return [i for i in self.items if i.kind == "copy"]

    @property
    def retags(self) -> list[WorkItem]:
        return [i for i in self.items if i.kind == "retag"]


__all__ = ["LAYOUTS", "Affordable", "Conflict", "Layout", "Plan", "Target", "UpToDate", "WorkItem", "selection_text"]
