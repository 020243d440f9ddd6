"""Selection: which destination tags the run should hold (library tag groups, an image list, tag sources),
and the problems with the selection itself that make prune refuse (a file that failed to parse, a term that
selects nothing)."""

from __future__ import annotations

import fnmatch
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

from .._errors import HubmirrorError
from ..config import SyncConfig
from ..plan import Plan, Target, dest_repository, library_targets, list_targets, read_image_list, source_targets
from ..redact import redact_url
from ..sources import SourceListing, list_sources
from ..state import State
from .events import SyncEvents
from .stores import Destination, Sources

if TYPE_CHECKING:  # the library package is loaded only by runs that read it (not --list ones)
    from ..library import Library, LibraryFilter, TagGroup

log = logging.getLogger(__name__)


async def select_targets(
    cfg: SyncConfig,
    plan: Plan,
    *,
    state: State,
    dest: Destination,
    sources: Sources,
    cache_dir: Path | None,
    events: SyncEvents,
) -> list[Target]:
    """Every target of *cfg*'s selection (library, image list, tag sources), in priority order, duplicates
    included. Fills *plan*'s library commit and diff (against the commit *state* last synced),
    its tag-source listings and its selection errors."""
    source = cfg.source
    targets: list[Target] = []
    if cfg.reads_library:
        from ..library import LibraryFilter, LibrarySource, diff_library, load_library

        events.phase(f"reading the library at {redact_url(cfg.library)}")
        lib_source = await LibrarySource.open(cfg.library, cache_dir)
        library = await load_library(lib_source, cfg.commit)
        plan.commit = library.commit
        previous = await state.aio.library_commit(cfg.library)
        plan.previous_commit = previous
        changed: frozenset[tuple[str, str]] = frozenset()
        changed_at = None
        if previous and previous != library.commit:
            try:
                ancestor = await lib_source.is_ancestor(previous, library.commit)
            except HubmirrorError:
                ancestor = False
            if ancestor:
                plan.diff = await diff_library(lib_source, previous, library.commit)
                changed = frozenset(plan.diff.tags_added) | frozenset(plan.diff.tags_changed)
                changed_at = await lib_source.commit_time(library.commit)
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
        check_library_selection(plan, cfg, library, selection, all_groups, groups)
        targets += library_targets(
            groups,
            source=source,
            namespace=dest.namespace,
            layout=dest.layout,
            images_order=[g for g in cfg.images if "*" not in g],
            changed=changed,
            changed_at=changed_at,
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
    only = cfg.only_repositories
    if only is not None:  # a run for chosen repositories (POST /api/sync {"repositories": [...]})
        targets = [t for t in targets if _chosen(t, only)]
    return targets


def _chosen(target: Target, names: frozenset[str]) -> bool:
    """Is *target* in one of the repositories *names* (``python``, ``library/python``, or the destination's)?"""
    repo = target.source_repo
    return repo in names or repo.removeprefix("library/") in names or target.dest_repo in names


def source_key(listing: SourceListing, dest: Destination) -> str:
    """The state's name of the destination repository a tag source lands in."""
    return dest.key(dest_repository(listing.spec.repository, dest.namespace, dest.layout))


def check_library_selection(
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


def unique(targets: list[Target]) -> list[Target]:
    """Drop later duplicates of one destination tag (a list entry repeating a library tag)."""
    seen: set[tuple[str, str | None, str]] = set()
    out = []
    for t in sorted(targets, key=lambda t: t.priority):
        key = (t.dest_repo, t.tag, t.source_ref if t.tag is None else "")
        if key not in seen:
            seen.add(key)
            out.append(t)
    return out


__all__ = ["check_library_selection", "select_targets", "source_key", "unique"]
