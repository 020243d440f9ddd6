"""Estimates: which work items are only retags (the destination holds the content: 0 pulls), and how many
pulls each copy costs: the index, its images and attestations (fewer when a kept index or a content mirror
serves them).

A copy's manifests are counted without spending a pull, from the most exact clue there is:

1. the index an earlier run fetched and kept (exactly the children the destination still lacks);
2. the platform selection (``--platform``): the index, each selected image and its attestation;
3. the index the destination holds for the item's tags now (a changed tag: a GET on your own destination,
   no pull): its platform images and attestations, scaled to the platforms upstream has now;
4. the platforms upstream has (the library file, a tag source's listing, or Docker Hub's tags API for an
   image-list entry: `hub_tag_images`), with attestations as the tags API lists them, or as the index's
   size (the check's HEAD, ``Content-Length``) says;
5. the index's size alone;
6. else one platform (an index: itself, an image and an attestation).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

from .._errors import HubmirrorError
from ..copy import SOURCE_DIGEST_ANNOTATION, selected_children
from ..media import DOCKER_LIST, INDEX_TYPES, Manifest
from ..reference import DOCKER_HUB
from ..sources import HubTagsAPI, TagImages
from ..state import TagRecord
from ..store import Store
from ..store.mirrored import MirroredStore
from .model import WorkItem, selection_text

T = TypeVar("T")
log = logging.getLogger(__name__)

#: Docker Hub's tags API for one work item's tag (`hub_tag_images`): its platforms and attestations.
TagImagesLookup = Callable[[WorkItem], Awaitable[TagImages | None]]

#: Bytes an index takes per platform image (measured on OCI indexes, compact JSON to indented by 3): ~215–320
#: with no attestation, ~595–845 with its attestation entry. Between the two the size tells how many of the
#: images have one (`_attestations`); with the platforms unknown, registries' usual indented JSON is assumed.
_PLAIN_MOST = 320
_ATTESTED_LEAST = 590
_PLAIN_INDENTED = 310
_ATTESTED_INDENTED = 810
_INDEX_OVERHEAD = 80
#: Tags API look-ups in flight at once, and the time one may take (an estimate is not worth a slow plan).
_API_CONCURRENCY = 8
_API_TIMEOUT = 15.0


def hub_tag_images(api: HubTagsAPI, registry: str) -> TagImagesLookup:
    """Ask Docker Hub's tags API (*api*) for the images of a work item's tag on *registry* (the Docker Hub
    source): one request per tag, no pull. After the first failure it is not asked again in the run."""
    sem = asyncio.Semaphore(_API_CONCURRENCY)
    failed: list[str] = []

    async def lookup(item: WorkItem) -> TagImages | None:
        tag = next((t.source_ref for t in item.targets if t.tag is not None), None)
        canonical = item.targets[0].canonical
        if failed or tag is None or item.source_registry != registry or not canonical.startswith(f"{DOCKER_HUB}/"):
            return None
        namespace, _, repo = item.source_repo.partition("/")
        async with sem:
            if failed:
                return None
            try:
                return await asyncio.wait_for(api.tag_images(namespace, repo, tag), _API_TIMEOUT)
            except (HubmirrorError, TimeoutError, OSError) as e:
                failed.append(str(e))
                log.info("pull estimate: tags API failed (%s); estimating from manifest sizes", e or "timeout")
                return None

    return lookup


async def classify(
    items: list[WorkItem],
    *,
    dest: Store,
    records: list[TagRecord],
    dest_key: Callable[[str], str],
    sources: Callable[[str], Store] | None = None,
    kept: Callable[[str], Awaitable[tuple[str, bytes] | None]] | None = None,
    tag_images: TagImagesLookup | None = None,
) -> None:
    """Mark items whose content the destination already holds as retags (0 pulls); estimate the rest
    (*kept*: the source manifests an earlier run fetched and kept, by digest).
    Content a content mirror holds (its top manifest found there with a free HEAD) is estimated at 0
    pulls: the mirror serves it. *tag_images*: Docker Hub's tags API (`hub_tag_images`), asked only for a
    copy whose platforms nothing else tells."""
    by_repo: dict[str, list[TagRecord]] = {}
    for rec in records:
        by_repo.setdefault(rec.dest_repo, []).append(rec)

    async def one(item: WorkItem) -> None:
        if item.missing_children:
            # A repair: the index is there, only its missing children are fetched (a pull each).
            await estimated(item, item.missing_children)
            return
        have: str | None = None
        if item.platforms is None:
            have = item.upstream_digest
        else:
            selection = selection_text(item.platforms)
            for rec in by_repo.get(dest_key(item.dest_repo), []):
                if (
                    rec.upstream_digest == item.upstream_digest
                    and rec.dest_digest != rec.upstream_digest
                    and rec.platforms == selection
                ):
                    have = rec.dest_digest
                    break
        if have is not None and await dest.head_manifest(item.dest_repo, have) is not None:
            item.kind = "retag"
            item.estimated_pulls = 0
            return
        held = await kept(item.upstream_digest) if kept is not None else None
        index = Manifest(held[1], held[0]) if held is not None else None
        if index is not None and index.digest == item.upstream_digest and not index.is_index:
            estimate = 0  # a single image fetched by an earlier run whose copy is not finished
        elif index is not None and index.digest == item.upstream_digest and index.is_index:
            # An index fetched by an earlier run whose copy is not finished: exactly the children the
            # destination still lacks and no run kept (the index itself costs nothing more).
            children = selected_children(index, item.platforms)
            there = await _gather(dest.head_manifest(item.dest_repo, c.digest) for c in children)
            missing = [c for c, d in zip(children, there, strict=True) if d is None]
            held_too = await _gather(kept(c.digest) for c in missing) if kept is not None else []
            estimate = sum(1 for h in held_too if h is None) if kept is not None else len(missing)
        else:
            estimate = await _copy_estimate(item, dest, tag_images)
        await estimated(item, estimate)

    async def estimated(item: WorkItem, estimate: int) -> None:
        """Set *item*'s pulls to *estimate*, or to none when a content mirror holds its top manifest."""
        store = sources(item.source_registry) if sources is not None else None
        if isinstance(store, MirroredStore):
            item.mirror = await store.mirror_with(item.source_repo, item.upstream_digest)
        if item.mirror is not None:
            item.mirror_manifests, item.estimated_pulls = estimate, 0
        else:
            item.estimated_pulls = estimate

    await _gather(one(i) for i in items)


async def _copy_estimate(item: WorkItem, dest: Store, tag_images: TagImagesLookup | None) -> int:
    """Manifests a copy of *item* fetches from its source, from the most exact clue (see the module)."""
    hints = [t.shared_missing for t in item.targets]
    if all(h is not None for h in hints):  # a SharedTag: only the platforms no entry's item brings along
        return 1 + 2 * min(h for h in hints if h is not None)
    if item.platforms is not None:
        return 1 + 2 * len(item.platforms) if item.media_type in INDEX_TYPES else 1
    known = max(t.n_platforms for t in item.targets)  # the library file or a tag source's listing; 0: unknown
    previous = await _previous_index(item, dest)
    if previous is not None:
        platforms, attestations = previous
        if known and known != platforms:  # upstream has other platforms now: the same share of attestations
            attestations, platforms = round(attestations * known / platforms), known
        return 1 + platforms + attestations
    if item.media_type not in INDEX_TYPES and item.media_type:
        return 1
    if known:
        return 1 + known + _attestations(item, known)
    api = await tag_images(item) if tag_images is not None else None
    if api is not None:
        attestations = api.attestations if api.attestations else _attestations(item, api.platforms)
        return 1 + api.platforms + attestations
    if item.size:
        # Only the size: an OCI index as BuildKit writes it (an attestation per image), a Docker list without.
        attested = item.media_type != DOCKER_LIST
        entry = _ATTESTED_INDENTED if attested else _PLAIN_INDENTED
        n = max(round((item.size - _INDEX_OVERHEAD) / entry), 1)
        return 1 + 2 * n if attested else 1 + n
    return 3 if item.media_type in INDEX_TYPES else 1  # unknown: an index with one image and its attestation


def _attestations(item: WorkItem, platforms: int) -> int:
    """Attestation manifests of an index of *platforms* images: as its size says when the check's HEAD gave
    one, else one per image (official images have them)."""
    if not item.size:
        return platforms if item.media_type != DOCKER_LIST else 0
    per_image = (item.size - _INDEX_OVERHEAD) / platforms
    share = (per_image - _PLAIN_MOST) / (_ATTESTED_LEAST - _PLAIN_MOST)
    return round(min(max(share, 0.0), 1.0) * platforms)


async def _previous_index(item: WorkItem, dest: Store) -> tuple[int, int] | None:
    """(platform images, attestations) of the index the destination holds for the item's tags now: a verbatim
    copy of an earlier upstream (a changed tag usually keeps its shape; a filtered copy hubmirror wrote does
    not count). A GET on the destination: no pull."""
    for digest in dict.fromkeys(item.dest_tags.values()):
        try:
            index = await dest.get_manifest(item.dest_repo, digest)
        except HubmirrorError:
            continue
        annotations = index.json.get("annotations") if index.is_index else None
        if isinstance(annotations, dict) and SOURCE_DIGEST_ANNOTATION in annotations:
            continue  # a filtered copy hubmirror wrote (an earlier --platform): not the upstream's shape
        if index.is_index:
            children = index.children
            attestations = sum(1 for c in children if c.is_attestation)
            if len(children) > attestations:
                return len(children) - attestations, attestations
    return None


async def _gather(aws: Iterable[Awaitable[T]]) -> list[T]:
    return list(await asyncio.gather(*aws))


__all__ = ["TagImagesLookup", "classify", "hub_tag_images"]
