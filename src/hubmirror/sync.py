"""The sync job: plan (HEADs only) → copy (within the pull budget) → state → prune → report.

`run_sync` is what ``hubmirror sync`` calls. It mirrors the selected official images (and/or an image
list) into a registry namespace or an OCI layout, spends Docker Hub pulls only on content that changed,
records every tag in the state database as soon as it is pushed, defers what the budget does not allow,
and returns a `SyncReport` whose `exit_code` the CLI exits with.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp

from ._errors import BudgetExhausted, ConfigError, HubmirrorError, NotFound, QuotaExceeded, RegistryError
from .budget import PullBudget
from .config import SyncConfig
from .copy import Copier, CopyEvents, CopyResult, first_error
from .media import Descriptor, Manifest
from .plan import (
    Layout,
    Plan,
    Target,
    WorkItem,
    check,
    dest_repository,
    library_targets,
    list_targets,
    read_image_list,
    selection_text,
    source_targets,
)
from .reference import normalize_registry
from .referrers import Followed, follow_referrers, subject_repository
from .registry.options import ClientOptions
from .registry.ratelimit import RateLimit
from .report import Outcome, SyncReport
from .sources import SourceListing, artifact_subject, list_sources
from .state import State, TagRecord
from .store import PullGate, Store, TransferStats
from .store.mirrored import SourceStats, counting_mirrored, mirror_options, source_stats, with_mirrors
from .store.ocidir import OCILayoutStore
from .store.registry import RegistryStore

if TYPE_CHECKING:  # the library package is loaded only by runs that read it (not --list ones)
    from .library import Library, LibraryFilter, TagGroup

log = logging.getLogger(__name__)

#: Seconds the plan's HEADs of destination tags stand for them (the copier does not HEAD them again).
DEST_TAGS_FRESH = 300.0


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
    """Stops a run gracefully from outside (the server on SIGTERM): items in flight finish and are
    recorded; copies not yet started are deferred (the next run takes them first)."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self._listeners: list[Callable[[str], None]] = []

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


@dataclass
class Destination:
    """Where the mirror lives: a registry namespace or an OCI layout directory."""

    store: Store
    namespace: str  # repository prefix inside the store ("" for an OCI layout)
    name: str  # as the user wrote it: 127.0.0.1:5000/mirror or oci:/srv/mirror
    layout: Layout = "flat"  # how source repositories are named inside the namespace

    @property
    def prefix(self) -> str:
        """The state's names of this destination's repositories all start with this (namespace included)."""
        return self.key(f"{self.namespace}/" if self.namespace else "")

    def repo(self, key: str) -> str:
        """The repository inside the store for a state name made by `key`."""
        return key[len(self.key("")) :]

    def key(self, repo: str) -> str:
        """The state's name for a destination repository: ``REGISTRY/NS/python`` or ``oci:PATH/python``."""
        if isinstance(self.store, OCILayoutStore):
            return f"{self.name}/{repo}"
        return f"{self.name.split('/', 1)[0]}/{repo}"


def open_destination(cfg: SyncConfig) -> Destination:
    """The destination store of *cfg* (``REGISTRY/NAMESPACE`` or ``oci:PATH``)."""
    if not cfg.dest:
        raise ConfigError("no destination: give --dest REGISTRY/NAMESPACE or --dest oci:PATH (or dest: in the config)")
    if cfg.dest.startswith("oci:"):
        path = Path(cfg.dest[4:])
        return Destination(OCILayoutStore(path), "", cfg.dest, cfg.layout)
    host, _, namespace = cfg.dest.partition("/")
    return Destination(_registry_store(cfg, host), namespace.strip("/"), cfg.dest.rstrip("/"), cfg.layout)


def _registry_store(
    cfg: SyncConfig,
    host: str,
    *,
    pull_gate: PullGate | None = None,
    mirror: bool = False,
    rate: float | None = None,
) -> RegistryStore:
    host = normalize_registry(host)
    options = ClientOptions(credentials=cfg.resolve_credentials(host), tls=cfg.tls_for(host), rate=rate)
    return RegistryStore(host, mirror_options(options) if mirror else options, pull_gate=pull_gate)


class _Sources:
    """One store per source registry, opened on first use.

    Only the Docker Hub source (``cfg.source``) gets the pull budget as its `PullGate`: its client asks
    the budget before every manifest GET it sends. Other registries of an image list are never deferred
    by the Hub's budget (their own 429s and ``Retry-After`` are still honoured by their clients).
    The source of docker.io content reads content by digest from its content mirrors first
    (`MirroredStore`); what they serve never goes through the gate.
    """

    def __init__(self, cfg: SyncConfig) -> None:
        self.cfg = cfg
        self.stores: dict[str, Store] = {}
        self.budget = PullBudget(
            self._hub_ratelimit,
            max_pulls=cfg.max_pulls,
            reserve=cfg.ratelimit.effective_reserve,
            wait=cfg.wait_for_quota,
            max_wait=cfg.ratelimit.max_wait if cfg.ratelimit.max_wait is not None else float("inf"),
        )

    def _hub_ratelimit(self) -> RateLimit | None:
        hub = self.stores.get(self.cfg.source)
        return hub.ratelimit if hub is not None else None

    def is_hub(self, registry: str) -> bool:
        """True for the registry whose pulls the budget counts (the configured source)."""
        return registry == self.cfg.source

    def __getitem__(self, registry: str) -> Store:
        if registry not in self.stores:
            if self.is_hub(registry):  # the pull budget, and a pace under Docker Hub's abuse limit
                store: Store = _registry_store(self.cfg, registry, pull_gate=self.budget, rate=self.cfg.source_rate)
            else:
                store = _registry_store(self.cfg, registry)
            if registry == self.cfg.source:
                store = with_mirrors(
                    store, self.cfg.source_mirrors, lambda host: _registry_store(self.cfg, host, mirror=True)
                )
            self.stores[registry] = store
        return self.stores[registry]

    def source_stats(self) -> list[SourceStats]:
        """Per source of content (each registry read from, each content mirror): what it served."""
        return [s for store in self.stores.values() for s in source_stats(store)]

    async def close(self) -> None:
        for s in self.stores.values():
            await s.close()


async def build_plan(
    cfg: SyncConfig,
    *,
    state: State,
    dest: Destination,
    sources: _Sources,
    cache_dir: Path | None = None,
    events: SyncEvents | None = None,
) -> Plan:
    """Decide what the run will do, spending no pulls (library from git, HEADs on source and destination)."""
    events = events or SyncEvents()
    plan = Plan()
    source = cfg.source
    targets: list[Target] = []
    if cfg.reads_library:
        from .library import LibraryFilter, LibrarySource, diff_library, load_library

        events.phase(f"reading the library at {cfg.library}")
        lib_source = await LibrarySource.open(cfg.library, cache_dir)
        library = await load_library(lib_source, cfg.commit)
        plan.commit = library.commit
        previous = await state.aio.library_commit(cfg.library)
        plan.previous_commit = previous
        changed: frozenset[tuple[str, str]] = frozenset()
        if previous and previous != library.commit:
            try:
                ancestor = await lib_source.is_ancestor(previous, library.commit)
            except HubmirrorError:
                ancestor = False
            if ancestor:
                plan.diff = await diff_library(lib_source, previous, library.commit)
                changed = frozenset(plan.diff.tags_added) | frozenset(plan.diff.tags_changed)
            else:
                plan.full_reconcile = True
        elif previous is None:
            plan.full_reconcile = True
        selection = LibraryFilter.build(
            images=cfg.images,
            images_file=cfg.images_file,
            include=cfg.include_tags,
            exclude=cfg.exclude_tags,
            platforms=cfg.platforms,
            windows=cfg.windows,
        )
        all_groups = list(library.tag_groups())
        groups = selection.apply(all_groups)
        _check_library_selection(plan, cfg, library, selection, all_groups, groups)
        targets += library_targets(
            groups,
            source=source,
            namespace=dest.namespace,
            layout=dest.layout,
            images_order=[g for g in cfg.images if "*" not in g],
            changed=changed,
        )
    if cfg.list_file is not None:
        refs = [(n, r) for n, r in read_image_list(cfg.list_file) if r.tag is None or cfg.tag_selected(r.tag)]
        targets += list_targets(
            refs, source=source, namespace=dest.namespace, layout=dest.layout, platforms=cfg.platform_list()
        )
    specs = cfg.tag_sources()
    if specs:
        events.phase(f"listing {len(specs)} tag source(s)")
        plan.sources = await list_sources(specs, stores=sources.__getitem__, source=source, hub_api=cfg.hub_api)
        for i, listing in enumerate(plan.sources):
            targets += source_targets(listing, namespace=dest.namespace, layout=dest.layout, order=i)

    # Deferred work from earlier runs goes first.
    deferred = {(d.dest_repo, tag) for d in await state.aio.deferred() for tag in d.tags}
    targets = [
        replace(t, priority=(0, *t.priority[1:])) if (dest.key(t.dest_repo), t.tag) in deferred else t for t in targets
    ]
    plan.targets = _unique(targets)
    events.phase(f"checking {len(plan.targets)} tags (manifest HEADs, free)")
    await check(
        plan, sources=sources.__getitem__, dest=dest.store, state=state, dest_key=dest.key, overwrite=cfg.overwrite
    )
    if plan.failed:
        target, reason = plan.failed[0]
        more = f" and {len(plan.failed) - 1} more" if len(plan.failed) > 1 else ""
        plan.block_prune(f"{target.canonical} could not be checked ({reason}){more}")

    # A tag source that could not be listed leaves the selection in doubt: prune deletes nothing in this run
    # (and its own repository's tags are not even counted as leaving).
    for listing in plan.sources:
        if listing.error:
            plan.block_prune(f"tag source {listing.name} could not be listed ({listing.error})")
    selected = {(dest.key(t.dest_repo), t.tag) for t in plan.targets}
    protected = {_source_key(listing, dest) for listing in plan.sources if listing.error}
    records = await state.aio.tags(prefix=dest.prefix)
    held = _held_subjects(plan, records, selected, dest)
    plan.leaving = [
        r
        for r in records
        if r.created_by_hubmirror
        and (r.dest_repo, r.tag) not in selected
        and r.dest_repo not in protected
        and not _follows_held(r, held)
    ]
    return plan


def _held_subjects(
    plan: Plan, records: list[TagRecord], selected: set[tuple[str, str | None]], dest: Destination
) -> set[tuple[str, str]]:
    """(destination repository, digest) of every image a selected tag holds or will hold: what the source
    has now, and what a recorded selected tag still holds (a copy deferred or failed keeps the old one)."""
    held = {(dest.key(u.target.dest_repo), u.upstream_digest) for u in plan.up_to_date}
    held |= {(dest.key(i.dest_repo), i.upstream_digest) for i in plan.items}
    held |= {(r.dest_repo, r.upstream_digest) for r in records if (r.dest_repo, r.tag) in selected}
    return held


def _follows_held(record: TagRecord, held: set[tuple[str, str]]) -> bool:
    """A signature or referrers tag (``sha256-<hex>[.sig|.att|.sbom]``) whose subject a selected tag holds:
    it stays as long as its image does, and leaves with it."""
    found = artifact_subject(record.tag)
    return found is not None and (record.dest_repo, found[0]) in held


def _source_key(listing: SourceListing, dest: Destination) -> str:
    """The state's name of the destination repository a tag source lands in."""
    return dest.key(dest_repository(listing.spec.repository, dest.namespace, dest.layout))


def _check_library_selection(
    plan: Plan,
    cfg: SyncConfig,
    library: Library,
    selection: LibraryFilter,
    all_groups: list[TagGroup],
    groups: list[TagGroup],
) -> None:
    """Library files that failed to parse, and selection terms that select nothing: failures that also
    stop prune (a typo must not empty the mirror). A broken file of a repository outside the selection is
    only logged: it cannot change what this run copies or prunes."""
    broken: set[str] = set()
    for err in library.errors:
        name = (err.file or "").removeprefix("library/")
        if name and not selection.match_repository(name):
            log.warning("library (not selected): %s", err)
            continue
        broken.add(name)
        where = f"line {err.line}: " if err.line is not None else ""
        plan.selection_error(err.file or "library", f"{where}{err.reason}; its tags are neither copied nor pruned")
    names = sorted({*library.repositories, *broken})
    selected_repos = {g.repo for g in groups}
    given = len([i for i in cfg.images if i.strip()])  # --images first, then the --images-file entries
    terms = [("--images" if k < given else str(cfg.images_file), t) for k, t in enumerate(selection.repositories)]
    at = f"the library at {library.commit[:12]}"
    for flag, term in terms:
        matched = [n for n in names if fnmatch.fnmatchcase(n, term)]
        if not matched:
            import difflib  # only for the hint of an unknown name

            close = difflib.get_close_matches(term, names, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            plan.selection_error(f"{flag} {term}", f"matches no repository of {at}{hint}")
        elif not any(n in selected_repos or n in broken for n in matched):
            plan.selection_error(
                f"{flag} {term}",
                f"matches {', '.join(matched[:5])}{' …' if len(matched) > 5 else ''}, but no tag of it passes the "
                "tag and platform filters (--include, --exclude, --platform, --windows)",
            )
    candidates = [g for g in all_groups if selection.match_repository(g.repo)]
    for pattern in cfg.include_tags:
        if candidates and not any(re.fullmatch(pattern, t) for g in candidates for t in g.tags):
            plan.selection_error(f"--include {pattern}", f"matches no tag of the selected repositories in {at}")


def _unique(targets: list[Target]) -> list[Target]:
    """Drop later duplicates of one destination tag (a list entry repeating a library tag)."""
    seen: set[tuple[str, str | None, str]] = set()
    out = []
    for t in sorted(targets, key=lambda t: t.priority):
        key = (t.dest_repo, t.tag, t.source_ref if t.tag is None else "")
        if key not in seen:
            seen.add(key)
            out.append(t)
    return out


class _Runner:
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
        sources: _Sources,
        report: SyncReport,
        run_id: int,
        events: SyncEvents,
        control: RunControl | None = None,
    ) -> None:
        self.cfg, self.plan, self.state, self.dest = cfg, plan, state, dest
        self.sources, self.report, self.run_id, self.events = sources, report, run_id, events
        self.hub = sources[cfg.source]
        self.budget = sources.budget
        self.budget.probe = self._probe
        self._copiers: dict[str, Copier] = {}
        self._sem = asyncio.Semaphore(cfg.concurrency)
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
        key = self.dest.key(item.dest_repo)
        selection = selection_text(item.platforms)
        records = [
            TagRecord(
                dest_repo=key,
                tag=t.tag,
                source_ref=t.canonical,
                upstream_digest=result.source_digest,
                dest_digest=result.digest,
                synced_at=datetime.now(UTC),
                run_id=self.run_id,
                # a tag that was there before hubmirror knew it (--overwrite) stays not created by hubmirror
                created_by_hubmirror=t.tag not in item.preexisting,
                platforms=selection,
            )
            for t in item.targets
            if t.tag is not None
        ]
        await self.state.aio.record_tags(records)
        await self.state.aio.drop_manifest(item.upstream_digest)
        for t in item.targets:
            await self.state.aio.clear_deferred(t.canonical, key)

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


#: Prune's default --max-delete: this share of the tags hubmirror created in the destination, rounded up.
MAX_DELETE_SHARE = 0.10


def max_delete_default(managed: int) -> int:
    """10 % of *managed* tags, rounded up: a mirror of 5 tags may lose 1 per run, one of 1,000 lose 100."""
    return math.ceil(managed * MAX_DELETE_SHARE)


async def prune(
    plan: Plan,
    *,
    state: State,
    dest: Destination,
    report: SyncReport,
    enabled: bool,
    events: SyncEvents,
    max_delete: int | None = None,
    dry_run: bool = False,
) -> None:
    """Tags hubmirror created that left the selection: delete them with *enabled*, else report them kept.

    Deletes nothing, and reports a failure, when the selection is in doubt (`Plan.prune_blockers`) or more
    than *max_delete* tags would go (default `max_delete_default` of the tags hubmirror manages there).
    Distribution 2.8 deletes only by digest, and that removes every tag on the digest: such a delete is
    done only when no tag that stays shares the digest; otherwise the tag is kept and the report says why.

    With *dry_run* nothing is deleted: the report says what a real run would do (refuse, with the same
    failure and exit code, or delete), counting the tags the plan's copies would add as managed.
    """
    if not plan.leaving and not (enabled and plan.prune_blockers):
        return
    if not enabled:
        _keep_leaving(plan, report, "left the selection; run with --prune to delete")
        return
    records = await state.aio.tags(prefix=dest.prefix)
    managed = _managed_after(plan, records, dest) if dry_run else sum(1 for r in records if r.created_by_hubmirror)
    refusals = prune_refusals(plan, managed=managed, max_delete=max_delete)
    if refusals:
        refused = "a real run would refuse, nothing would be deleted" if dry_run else "refused, nothing deleted"
        report.add(Outcome.FAILED, "--prune", dest.name, reason=f"{refused}: {'; '.join(refusals)}")
        kept = "a real run's prune would refuse" if dry_run else "prune refused"
        _keep_leaving(plan, report, f"left the selection; {kept} (see the --prune row)")
        return
    if dry_run:
        for rec in plan.leaving:
            why = "would delete (left the selection)"
            report.add(Outcome.PRUNED, rec.source_ref, rec.dest_repo, [rec.tag], digest=rec.upstream_digest, reason=why)
        return
    events.phase(f"pruning {len(plan.leaving)} tags that left the selection")
    by_repo: dict[str, list[TagRecord]] = {}
    for rec in plan.leaving:
        by_repo.setdefault(rec.dest_repo, []).append(rec)
    for key, records in by_repo.items():
        repo = dest.repo(key)
        leaving = {r.tag for r in records}
        for rec in records:
            outcome, reason = await _prune_tag(dest.store, repo, rec, leaving)
            if outcome is Outcome.PRUNED:
                await state.aio.forget_tag(rec.dest_repo, rec.tag)
            report.add(outcome, rec.source_ref, rec.dest_repo, [rec.tag], digest=rec.upstream_digest, reason=reason)


def prune_refusals(plan: Plan, *, managed: int, max_delete: int | None) -> list[str]:
    """Why prune must delete nothing in this run (empty: it may): the plan's blockers, and more tags
    leaving than *max_delete* (default `max_delete_default` of the *managed* tags hubmirror created there)."""
    refusals = list(plan.prune_blockers)
    limit = max_delete if max_delete is not None else max_delete_default(managed)
    if len(plan.leaving) > limit:
        how = "--max-delete" if max_delete is not None else f"the default --max-delete: 10 % of the {managed} tags"
        refusals.append(
            f"it would delete {len(plan.leaving)} tags, more than {limit} ({how} hubmirror manages there); "
            f"give --max-delete {len(plan.leaving)} if that is intended"
        )
    return refusals


def _managed_after(plan: Plan, records: list[TagRecord], dest: Destination) -> int:
    """The tags hubmirror will have created in the destination when the plan's copies are recorded, as a
    real run counts them before it prunes: those recorded now, and each new tag a copy or retag writes
    (a tag already recorded keeps its flag; one found at the destination first is not created by hubmirror)."""
    known = {(r.dest_repo, r.tag) for r in records}
    new = {
        (dest.key(item.dest_repo), tag)
        for item in plan.items
        for tag in item.tags
        if tag not in item.preexisting and (dest.key(item.dest_repo), tag) not in known
    }
    return sum(1 for r in records if r.created_by_hubmirror) + len(new)


def _keep_leaving(plan: Plan, report: SyncReport, reason: str) -> None:
    """Report every tag that left the selection as kept, for *reason*."""
    for rec in plan.leaving:
        report.add(Outcome.KEPT, rec.source_ref, rec.dest_repo, [rec.tag], digest=rec.upstream_digest, reason=reason)


async def _prune_tag(store: Store, repo: str, rec: TagRecord, leaving: set[str]) -> tuple[Outcome, str | None]:
    head = await store.head_manifest(repo, rec.tag)
    if head is None:
        return Outcome.PRUNED, "already gone from the destination"
    if head.digest != rec.dest_digest:
        return Outcome.KEPT, f"the tag now points at {head.digest[:19]}, not what hubmirror wrote"
    try:
        await store.delete_manifest(repo, rec.tag)
        return Outcome.PRUNED, None
    except NotFound:
        return Outcome.PRUNED, "already gone from the destination"
    except RegistryError as e:
        if e.status not in (400, 404, 405) and e.code not in ("UNSUPPORTED", "DIGEST_INVALID", "MANIFEST_UNKNOWN"):
            return Outcome.KEPT, f"delete refused: {e}"
    # The registry deletes by digest only: allowed when every tag on that digest is leaving too.
    sharing = []
    for tag in await store.list_tags(repo):
        if tag in leaving:
            continue
        other = await store.head_manifest(repo, tag)
        if other is not None and other.digest == head.digest:
            sharing.append(tag)
    if sharing:
        return (
            Outcome.KEPT,
            f"the registry deletes by digest only, and kept tag(s) {', '.join(sorted(sharing))} share it",
        )
    try:
        await store.delete_manifest(repo, head.digest)
    except NotFound:
        pass
    except RegistryError as e:
        return Outcome.KEPT, f"delete refused: {e}"
    return Outcome.PRUNED, "deleted by digest (the registry cannot delete a tag alone)"


async def _record_followed(followed: list[Followed], *, state: State, dest: Destination, run_id: int) -> None:
    """Record the signature and referrers tags now at the destination, like image tags: created by
    hubmirror when it wrote them (one found there already stays not created: prune never deletes it; one
    recorded before keeps its flag). Prune deletes them once no selected tag holds their subject."""
    records = [
        TagRecord(
            dest_repo=dest.key(f.subject.dest_repo),
            tag=f.ref,
            source_ref=f"{subject_repository(f.subject)}:{f.ref}",
            upstream_digest=f.source_digest or f.digest or "",
            dest_digest=f.digest or "",
            synced_at=datetime.now(UTC),
            run_id=run_id,
            created_by_hubmirror=f.written,
            platforms="",
        )
        for f in followed
        if f.is_tag
    ]
    await state.aio.record_tags(records)


async def _record_up_to_date(plan: Plan, *, state: State, dest: Destination, report: SyncReport, run_id: int) -> None:
    """Remember destination tags found already right. One the state had no record of was not created by
    hubmirror (created=False: prune never deletes it); one it had keeps its created flag."""
    records = [
        TagRecord(
            dest_repo=dest.key(u.target.dest_repo),
            tag=u.target.tag,
            source_ref=u.target.canonical,
            upstream_digest=u.upstream_digest,
            dest_digest=u.dest_digest,
            synced_at=datetime.now(UTC),
            run_id=run_id,
            created_by_hubmirror=u.created,
            platforms=selection_text(u.target.platforms),
        )
        for u in plan.up_to_date
        if u.target.tag is not None and not u.recorded
    ]
    await state.aio.record_tags(records)
    groups: dict[tuple[str, str], list[str]] = {}
    first: dict[tuple[str, str], str] = {}
    for u in plan.up_to_date:
        k = (dest.key(u.target.dest_repo), u.upstream_digest)
        groups.setdefault(k, []).append(u.target.tag or u.target.source_ref)
        first.setdefault(k, u.target.canonical)
    for (key, digest), tags in groups.items():
        report.add(Outcome.UP_TO_DATE, first[(key, digest)], key, tags, digest=digest)


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
    sources = _Sources(cfg)
    report = SyncReport(library=cfg.library if cfg.reads_library else None, dest=cfg.dest)
    report.dry_run = cfg.dry_run
    state = await asyncio.to_thread(State.open, cfg.state)
    try:
        with contextlib.ExitStack() as stack:
            if not cfg.dry_run:
                stack.enter_context(state.lock())
            plan = await build_plan(cfg, state=state, dest=dest, sources=sources, cache_dir=cache_dir, events=events)
            report.commit = plan.commit

            async def prune_selection() -> None:  # the dry run predicts what the real run deletes
                await prune(
                    plan,
                    state=state,
                    dest=dest,
                    report=report,
                    enabled=cfg.prune,
                    events=events,
                    max_delete=cfg.max_delete,
                    dry_run=cfg.dry_run,
                )

            if cfg.dry_run:
                _plan_report(plan, report, dest)
                await prune_selection()
                _finish(report, sources, dest, cfg)
                return plan, report
            run_id = await state.aio.begin_run(plan.commit)
            report.run_id = run_id
            _add_failed(plan, report, dest)
            await _record_up_to_date(plan, state=state, dest=dest, report=report, run_id=run_id)
            events.plan_ready(plan)
            runner = _Runner(
                cfg,
                plan,
                state=state,
                dest=dest,
                sources=sources,
                report=report,
                run_id=run_id,
                events=events,
                control=control,
            )
            await runner.run()
            # Deferred work was taken first by the plan and stays recorded until the run has ended (a crash
            # keeps its priority): now what this run deferred again stays, and entries for images that
            # were done, failed, left the selection or became up to date go.
            for d in await state.aio.deferred():
                if d.dest_repo.startswith(dest.prefix) and (d.source_ref, d.dest_repo) not in runner.deferred:
                    await state.aio.clear_deferred(d.source_ref, d.dest_repo)
            if cfg.signatures and (control is None or control.reason is None):
                events.phase("copying signatures and referrers of the mirrored images")
                followed = await follow_referrers(
                    plan,
                    report,
                    copier=runner.copier,
                    sources=sources.__getitem__,
                    dest=dest.store,
                    dest_key=dest.key,
                    listed=True,
                )
                await _record_followed(followed, state=state, dest=dest, run_id=run_id)
            await prune_selection()
            _finish(report, sources, dest, cfg)
            status = report.run_status
            # A commit whose selection was in doubt (a file failed to parse, …) is not synced: the next run
            # looks at it again.
            if report.exit_code == 0 and plan.commit is not None and not plan.prune_blockers:
                await state.aio.set_library_commit(cfg.library, plan.commit)
            await state.aio.finish_run(run_id, status, report.to_dict()["totals"], commit=plan.commit)
            return plan, report
    finally:
        state.close()
        await sources.close()
        await dest.store.close()


def _finish(report: SyncReport, sources: _Sources, dest: Destination, cfg: SyncConfig) -> None:
    report.finish()
    for store in sources.stores.values():
        report.totals.add_stats(store.stats, TransferStats())
    report.totals.add_stats(TransferStats(), dest.store.stats)
    # Abuse-limit 429s per registry (the pace is too fast where they add up); an OCI layout has none.
    stores = [*sources.stores.values(), *([dest.store] if isinstance(dest.store, RegistryStore) else [])]
    for store in stores:
        report.abuse_backoffs[store.name] = report.abuse_backoffs.get(store.name, 0) + store.stats.abuse_backoffs
    report.content_sources = sources.source_stats()
    hub = sources.stores.get(cfg.source)
    rl = hub.ratelimit if hub is not None else None
    if rl is not None:
        report.totals.ratelimit_remaining = rl.remaining
        report.totals.ratelimit_limit = rl.limit
        report.totals.ratelimit_window = rl.window


def _add_failed(plan: Plan, report: SyncReport, dest: Destination) -> None:
    """Failures known from the plan: selection errors, tags that could not be checked, conflicts."""
    for what, reason in plan.selection_errors:
        report.add(Outcome.FAILED, what, dest.name, reason=reason)
    report.sources = [listing.to_dict() for listing in plan.sources]
    for listing in plan.sources:
        if listing.error:
            reason = f"{listing.error}; nothing is pruned in this run"
            report.add(Outcome.FAILED, listing.name, _source_key(listing, dest), reason=reason)
    for target, reason in plan.failed:
        tags = [target.tag] if target.tag else []
        report.add(Outcome.FAILED, target.canonical, dest.key(target.dest_repo), tags, reason=reason)
    for c in plan.conflicts:
        report.add(
            Outcome.FAILED,
            c.target.canonical,
            dest.key(c.target.dest_repo),
            [c.target.tag or ""],
            digest=c.upstream_digest,
            previous_digest=c.dest_digest,
            reason=(
                f"conflict: the destination tag holds {c.dest_digest[:19]}…, which hubmirror did not write; "
                "left as it is (--overwrite replaces it)"
            ),
        )


def _plan_report(plan: Plan, report: SyncReport, dest: Destination) -> None:
    """A dry run's report: what would be copied, retagged or deferred (nothing was done)."""
    _add_failed(plan, report, dest)
    for u in plan.up_to_date:
        report.add(Outcome.UP_TO_DATE, u.target.canonical, dest.key(u.target.dest_repo), [u.target.tag or ""])
    for item in plan.items:
        outcome = Outcome.RETAGGED if item.kind == "retag" else Outcome.COPIED
        report.add(
            outcome,
            item.canonical,
            dest.key(item.dest_repo),
            item.tags,
            digest=item.upstream_digest,
            previous_digest=item.previous_digest,
            reason=f"would {item.kind} ({item.reason})",
            pulls=item.estimated_pulls,
        )


__all__ = ["Destination", "RunControl", "SyncEvents", "build_plan", "open_destination", "prune", "run_sync"]
