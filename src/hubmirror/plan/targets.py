"""Targets: every destination tag a run should hold, from the library's tag groups, an image list or a tag
source, and where each lands in the destination (`dest_repository`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from .._errors import HubmirrorError, InvalidReference
from .._fs import decode_text
from ..media import OCI_INDEX, OCI_MANIFEST
from ..platform import Platform
from ..reference import DOCKER_HUB, Reference
from ..sources import SourceListing
from .model import Layout, Target

if TYPE_CHECKING:  # the library package is loaded only by runs that read it (not --list ones)
    from ..library import TagGroup


def dest_repository(ref: Reference, namespace: str, layout: Layout = "flat") -> str:
    """Where *ref* lands under *namespace* in *layout* (see `Layout`)."""
    path = ref.repository
    if layout == "mirror":
        if ref.registry != DOCKER_HUB:
            # A port is not allowed in a repository path component: 127.0.0.1:5000 → 127.0.0.1-5000.
            path = f"{ref.registry.replace(':', '-')}/{path}"
    elif ref.registry == DOCKER_HUB and path.startswith("library/"):
        path = path[len("library/") :]
    return f"{namespace}/{path}" if namespace else path


def library_targets(
    groups: Iterable[TagGroup],
    *,
    source: str,
    namespace: str,
    layout: Layout = "flat",
    images_order: Sequence[str] = (),
    changed: frozenset[tuple[str, str]] = frozenset(),
    changed_at: datetime | None = None,
) -> list[Target]:
    """A target per tag of each selected library tag group (official images live at docker.io/library).
    The *changed* (repository, tag) pairs changed upstream at *changed_at* (the library commit's time)."""
    order = {name: i for i, name in enumerate(images_order)}
    groups = list(groups)
    entry_platforms = {(g.repo, g.entries[0]): set(g.platforms) for g in groups if not g.shared and g.entries}
    targets: list[Target] = []
    position: dict[str, int] = {}
    for group in groups:
        missing: int | None = None
        if group.shared:
            covered = set().union(*(entry_platforms.get((group.repo, e), set()) for e in group.entries))
            missing = len([p for p in group.platforms if p not in covered])
        repo = f"library/{group.repo}"
        plats = group.platforms if group.platforms_filtered else None
        gpos = position.setdefault(group.repo, 0)
        position[group.repo] = gpos + 1
        for i, tag in enumerate(group.tags):
            hot = 0 if (group.repo, tag) in changed else 1
            targets.append(
                Target(
                    canonical=f"{DOCKER_HUB}/{repo}:{tag}",
                    source_registry=source,
                    source_repo=repo,
                    source_ref=tag,
                    dest_repo=dest_repository(Reference(DOCKER_HUB, repo), namespace, layout),
                    tag=tag,
                    platforms=plats,
                    n_platforms=len(group.upstream_platforms),
                    # config order, then what git says changed, then newest (file order) first
                    priority=(1, order.get(group.repo, len(order)), hot, gpos, i),
                    shared_missing=missing,
                    changed_at=changed_at if not hot else None,
                )
            )
    return targets


def read_image_list(path: Path) -> list[tuple[int, Reference]]:
    """The references of an image-list file: one per line, ``#`` comments; errors name file and line."""
    try:
        text = decode_text(path.read_bytes(), f"image list {path}")
    except OSError as e:
        raise HubmirrorError(f"cannot read image list {path}: {e.strerror or e}") from None
    except ValueError as e:
        raise HubmirrorError(str(e)) from None
    refs: list[tuple[int, Reference]] = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            refs.append((n, Reference.parse(line)))
        except InvalidReference as e:
            raise InvalidReference(f"{path}:{n}: {e}") from None
    return refs


def list_targets(
    refs: Iterable[tuple[int, Reference]],
    *,
    source: str,
    namespace: str,
    layout: Layout = "flat",
    platforms: Sequence[Platform] = (),
) -> list[Target]:
    """A target per explicit reference; ``docker.io`` entries are read from *source*."""
    targets = []
    for n, ref in refs:
        registry = source if ref.registry == DOCKER_HUB else ref.registry
        targets.append(
            Target(
                canonical=str(ref),
                source_registry=registry,
                source_repo=ref.repository,
                source_ref=ref.ref,
                dest_repo=dest_repository(ref, namespace, layout),
                tag=ref.tag,
                platforms=tuple(platforms) or None,
                priority=(1, 0, 1, n, 0),
            )
        )
    return targets


def source_targets(listing: SourceListing, *, namespace: str, layout: Layout = "flat", order: int = 0) -> list[Target]:
    """A target per tag a tag source kept (newest first), landing at `dest_repository`."""
    spec = listing.spec
    dest_repo = dest_repository(spec.repository, namespace, layout)
    targets = []
    for rank, t in enumerate(listing.kept):
        n = len(t.platforms or ())
        targets.append(
            Target(
                canonical=f"{spec.name}:{t.name}",
                source_registry=listing.source_registry,
                source_repo=spec.repository.repository,
                source_ref=t.name,
                dest_repo=dest_repo,
                tag=t.name,
                platforms=spec.platforms or None,
                n_platforms=n,
                priority=(1, 1000 + order, 1, rank, 0),
                known_digest=t.digest,
                # The tags API does not give the manifest type: a guess is enough for the pull estimate
                # (the copier reads the real type with the manifest).
                known_media_type=OCI_INDEX if n > 1 else OCI_MANIFEST,
                immutable=spec.is_immutable(t.name),
                changed_at=t.pushed,
            )
        )
    return targets


__all__ = ["dest_repository", "library_targets", "list_targets", "read_image_list", "source_targets"]
