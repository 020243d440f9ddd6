"""The plan step: the selection's targets checked with free HEADs on source and destination (`hubmirror.plan.check`),
deferred work first, and the recorded tags that left the selection."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from .._errors import LibraryError
from ..config import DEFAULT_SOURCE, SyncConfig
from ..plan import Plan, check
from ..plan.estimate import hub_tag_images
from ..reference import normalize_registry
from ..sources import DEFAULT_HUB_API, HubTagsAPI, artifact_subject
from ..state import State, TagRecord
from .events import SyncEvents
from .selection import select_targets, source_key, unique
from .stores import Destination, Sources, probe_destination

#: Added to a failed clone or fetch of a library URL: the library can come from a file instead.
OFFLINE_HINT = (
    "; without network access, give --library a local clone or a git bundle of official-images (made where "
    "there is network: git clone https://github.com/docker-library/official-images, or git bundle create "
    "official-images.bundle --all inside such a clone)"
)


async def build_plan(
    cfg: SyncConfig,
    *,
    state: State,
    dest: Destination,
    sources: Sources,
    cache_dir: Path | None = None,
    events: SyncEvents | None = None,
) -> Plan:
    """Decide what the run will do, spending no pulls (library from git, HEADs on source and destination)."""
    events = events or SyncEvents()
    await probe_destination(dest)
    plan = Plan()
    try:
        targets = await select_targets(
            cfg, plan, state=state, dest=dest, sources=sources, cache_dir=cache_dir, events=events
        )
    except LibraryError as e:
        from ..library._git import _is_url  # only when the library could not be read

        if cfg.reads_library and _is_url(cfg.library) and str(e).startswith(("cloning ", "fetching ")):
            raise LibraryError(f"{e}{OFFLINE_HINT}") from None
        raise

    # Deferred work from earlier runs goes first.
    deferred = {(d.dest_repo, tag) for d in await state.aio.deferred() for tag in d.tags}
    targets = [
        replace(t, priority=(0, *t.priority[1:])) if (dest.key(t.dest_repo), t.tag) in deferred else t for t in targets
    ]
    plan.targets = unique(targets)
    events.phase(check_phase(plan))
    # Docker Hub's tags API tells the pull estimate how many images an image list's entries have (no pull):
    # asked when the source is Docker Hub, or when --hub-api names one for the source (an emulator, a proxy).
    hub_source = normalize_registry(cfg.source) == DEFAULT_SOURCE or cfg.hub_api != DEFAULT_HUB_API
    api = HubTagsAPI(cfg.hub_api) if cfg.hub_api and hub_source and cfg.list_file is not None else None
    try:
        await check(
            plan,
            sources=sources.__getitem__,
            dest=dest.store,
            state=state,
            dest_key=dest.key,
            overwrite=cfg.overwrite,
            tag_images=hub_tag_images(api, cfg.source) if api is not None else None,
        )
    finally:
        if api is not None:
            await api.close()
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
    protected = {source_key(listing, dest) for listing in plan.sources if listing.error}
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


def check_phase(plan: Plan) -> str:
    """``checking N tags (manifest HEADs, free)``, saying which tags need no HEAD on the source: a tags API
    gave their digests (the summary's HEAD count is the source's, and may well be 0 then)."""
    n = len(plan.targets)
    known = sum(1 for t in plan.targets if t.known_digest is not None)
    if not known:
        return f"checking {n} tags (manifest HEADs, free)"
    if known == n:
        return f"checking {n} tags (digests from the tags API: no HEAD on the source; free HEADs on the destination)"
    return f"checking {n} tags ({known} digests from the tags API, manifest HEADs for the other {n - known}, free)"


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


__all__ = ["OFFLINE_HINT", "build_plan"]
