"""Estimates: which work items are only retags (the destination holds the content: 0 pulls), and how many
pulls each copy costs (an index, its images and attestations; fewer when a kept index or a content mirror
serves them)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

from ..copy import selected_children
from ..media import INDEX_TYPES, Manifest
from ..state import TagRecord
from ..store import Store
from ..store.mirrored import MirroredStore
from .model import WorkItem, selection_text

T = TypeVar("T")


async def classify(
    items: list[WorkItem],
    *,
    dest: Store,
    records: list[TagRecord],
    dest_key: Callable[[str], str],
    sources: Callable[[str], Store] | None = None,
    kept: Callable[[str], Awaitable[tuple[str, bytes] | None]] | None = None,
) -> None:
    """Mark items whose content the destination already holds as retags (0 pulls); estimate the rest
    (*kept*: the source manifests an earlier run fetched and kept, by digest).
    Content a content mirror holds (its top manifest found there with a free HEAD) is estimated at 0
    pulls: the mirror serves it."""
    by_repo: dict[str, list[TagRecord]] = {}
    for rec in records:
        by_repo.setdefault(rec.dest_repo, []).append(rec)

    async def one(item: WorkItem) -> None:
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
            n = max(max(t.n_platforms for t in item.targets), 1)  # unknown: at least one platform
            if item.platforms is not None:
                n = len(item.platforms)
            hints = [t.shared_missing for t in item.targets]
            if all(h is not None for h in hints):
                n = min(h for h in hints if h is not None)
            # an index: itself, plus each platform's image and (usually) its attestation manifest
            estimate = 1 + 2 * n if item.media_type in INDEX_TYPES else 1
        store = sources(item.source_registry) if sources is not None else None
        if isinstance(store, MirroredStore):
            item.mirror = await store.mirror_with(item.source_repo, item.upstream_digest)
        if item.mirror is not None:
            item.mirror_manifests, item.estimated_pulls = estimate, 0
        else:
            item.estimated_pulls = estimate

    await _gather(one(i) for i in items)


async def _gather(aws: Iterable[Awaitable[T]]) -> list[T]:
    return list(await asyncio.gather(*aws))


__all__ = ["classify"]
