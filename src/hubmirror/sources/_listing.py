"""Tag sources: list a repository's tags and apply the source's policies.

One small protocol, `TagSource` (``name`` and ``list()``), with two implementations:

* `RegistryTags`: a registry's ``tags/list`` (paginated by the client);
* `HubTags`: Docker Hub's repository tags API (digests and push times for a handful of requests, no
  pulls), falling back to the registry's ``tags/list`` (and so to HEADs in the plan) when it fails.

The third kind of source, the ``--list`` file of exact references, needs no listing and is turned into
targets by `hubmirror.plan.list_targets`.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from .._errors import ConfigError, HubmirrorError
from ..platform import Platform
from ..reference import DOCKER_HUB, Reference
from ..store import Store
from ._hub import DEFAULT_HUB_API, HubApiError, HubApiThrottled, HubTagsAPI
from ._policy import Dropped, KeepBy, PolicyError, TagInfo, TagPolicy, artifact_subject
from ._semver import SemverRange

log = logging.getLogger(__name__)

SourceKind = Literal["repo", "registry", "hub"]

#: Sources listed at once.
LIST_CONCURRENCY = 8


@dataclass(frozen=True)
class SourceSpec:
    """One ``sources:`` entry (or one ``--repo``): which repository, how it is listed, its policies."""

    kind: SourceKind
    repository: Reference  # registry + repository path (no tag)
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    semver: str | None = None
    prerelease: bool = False
    keep: int | None = None
    keep_by: KeepBy | None = None
    platforms: tuple[Platform, ...] = ()
    immutable: tuple[str, ...] = ()
    signatures: bool = True

    @classmethod
    def parse(cls, kind: SourceKind, name: str, **policies: Any) -> SourceSpec:
        """A spec from the user's spelling: ``registry: ghcr.io/a/b``, ``hub: grafana/grafana``,
        ``repo: docker.io/library/python`` (``python`` alone means Docker Hub's official image).
        Raises `ConfigError` naming the entry."""
        text = name.strip()
        if kind == "hub":
            text = text.removeprefix("docker.io/").removeprefix("index.docker.io/")
            text = f"docker.io/{text}"
        try:
            ref = Reference.parse(text, default_tag=None)
        except HubmirrorError as e:
            raise ConfigError(f"source {name!r}: {e}") from None
        if ref.tag or ref.digest:
            raise ConfigError(f"source {name!r}: name a repository, not a tag or digest (filters choose the tags)")
        if kind == "hub" and ref.registry != DOCKER_HUB:
            raise ConfigError(f"source {name!r}: hub: takes NAMESPACE/REPO on Docker Hub")
        spec = cls(kind, ref, **policies)
        if spec.keep_by == "pushed" and not spec.uses_hub_api:
            raise ConfigError(
                f"source {name!r}: keep_by: pushed needs push times, which only Docker Hub's tags API gives (a "
                "docker.io repository); a registry's tags/list has none: use keep_by: semver"
            )
        if spec.semver is not None:
            SemverRange.parse(spec.semver)
        if spec.immutable and ref.registry == DOCKER_HUB and ref.repository.startswith("library/"):
            raise ConfigError(
                f"source {name!r}: official images are rebuilt under the same tags; immutable is not allowed for "
                "docker.io/library repositories"
            )
        return spec

    @property
    def name(self) -> str:
        return self.repository.name

    @property
    def uses_hub_api(self) -> bool:
        return self.kind != "registry" and self.repository.registry == DOCKER_HUB

    def policy(self) -> TagPolicy:
        return TagPolicy(
            include=self.include,
            exclude=self.exclude,
            semver=SemverRange.parse(self.semver) if self.semver else None,
            prerelease=self.prerelease,
            keep=self.keep,
            keep_by=self.keep_by,
            platforms=self.platforms,
        )

    def is_immutable(self, tag: str) -> bool:
        return any(re.fullmatch(p, tag) for p in self.immutable)


@dataclass
class Listed:
    """What a source listed: its tags, and how (``hub-api`` or ``tags/list``, with a note on fallback)."""

    tags: list[TagInfo]
    via: str
    note: str | None = None


class TagSource(Protocol):
    """Something that can list a repository's tags."""

    name: str

    async def list(self) -> Listed:
        """Every tag; raises `HubmirrorError` when the source cannot be listed."""
        ...


class RegistryTags:
    """A registry's ``tags/list`` (the client follows ``Link`` pages)."""

    def __init__(self, store: Store, repo: str, name: str) -> None:
        self.store, self.repo, self.name = store, repo, name

    async def list(self) -> Listed:
        tags = await self.store.list_tags(self.repo)
        if not tags:
            raise HubmirrorError(f"{self.name}: no tags listed (the repository is missing or empty)")
        return Listed([TagInfo(t) for t in dict.fromkeys(tags)], "tags/list")


class HubTags:
    """Docker Hub's tags API, with `RegistryTags` as the fallback when the API fails.

    The fallback lists no push times: the listing's note says so (the report's ``sources``), and a source
    that keeps its newest tags by push time (``keep_by: pushed``) is then refused rather than silently
    kept in another order (`TagPolicy.apply`)."""

    def __init__(self, api: HubTagsAPI, namespace: str, repo: str, fallback: RegistryTags) -> None:
        self.api, self.namespace, self.repo, self.fallback = api, namespace, repo, fallback
        self.name = fallback.name

    async def list(self) -> Listed:
        try:
            listed = await self.api.tags(self.namespace, self.repo)
        except HubApiThrottled as e:
            return await self._fallback(f"Docker Hub tags API {e.reason}")
        except HubApiError as e:
            return await self._fallback(f"Docker Hub tags API failed ({e.reason})")
        if not listed.tags:
            return await self._fallback("Docker Hub tags API listed no tags")
        return Listed(listed.tags, "hub-api", listed.note)

    async def _fallback(self, why: str) -> Listed:
        note = f"{why}; listed with tags/list, without push times, and checked with HEADs"
        log.warning("%s: %s", self.name, note)
        listed = await self.fallback.list()
        listed.note = note
        return listed


@dataclass
class SourceListing:
    """One source in this run: what was listed, what each policy kept and dropped, the targets made."""

    spec: SourceSpec
    source_registry: str  # where content is read from (docker.io replaced by --source)
    via: str = ""
    note: str | None = None
    error: str | None = None  # the listing failed: nothing of this source is pruned
    listed: int = 0
    kept: list[TagInfo] = field(default_factory=list)
    dropped: list[Dropped] = field(default_factory=list)
    artifacts: list[TagInfo] = field(default_factory=list)  # signature / referrers tags (follow subjects)

    @property
    def name(self) -> str:
        return self.spec.name

    def to_dict(self) -> dict[str, Any]:
        """The pinned ``--dry-run --json`` shape: per source the tags kept and, per dropped tag, the policy."""
        return {
            "source": self.name,
            "kind": self.spec.kind,
            "via": self.via or None,
            "note": self.note,
            "error": self.error,
            "listed": self.listed,
            "kept": [t.name for t in self.kept],
            "dropped": [{"tag": d.tag, "policy": d.policy, "reason": d.reason} for d in self.dropped],
            "artifacts": [t.name for t in self.artifacts],
        }


def open_source(
    spec: SourceSpec, *, stores: Callable[[str], Store], source: str, hub: HubTagsAPI | None
) -> tuple[TagSource, str]:
    """The `TagSource` for *spec*, and the registry its content is read from."""
    ref = spec.repository
    registry = source if ref.registry == DOCKER_HUB else ref.registry
    plain = RegistryTags(stores(registry), ref.repository, spec.name)
    if spec.uses_hub_api and hub is not None:
        namespace, _, repo = ref.repository.partition("/")
        return HubTags(hub, namespace, repo, plain), registry
    return plain, registry


async def list_sources(
    specs: Sequence[SourceSpec],
    *,
    stores: Callable[[str], Store],
    source: str,
    hub_api: str | None = DEFAULT_HUB_API,
) -> list[SourceListing]:
    """List every source (concurrently) and apply its policies (`hubmirror.plan.source_targets` makes
    the plan's targets from the result)."""
    hub = HubTagsAPI(hub_api) if hub_api else None
    sem = asyncio.Semaphore(LIST_CONCURRENCY)

    async def one(spec: SourceSpec) -> SourceListing:
        tag_source, registry = open_source(spec, stores=stores, source=source, hub=hub)
        listing = SourceListing(spec, registry)
        try:
            async with sem:
                listed = await tag_source.list()
        except (HubmirrorError, OSError, TimeoutError) as e:
            listing.error = f"listing {spec.name} failed: {e}"
            return listing
        listing.via, listing.note, listing.listed = listed.via, listed.note, len(listed.tags)
        images = [t for t in listed.tags if artifact_subject(t.name) is None]
        listing.artifacts = [t for t in listed.tags if artifact_subject(t.name) is not None]
        try:
            listing.kept, listing.dropped = spec.policy().apply(images)
        except PolicyError as e:
            listing.artifacts = []
            listing.error = f"{spec.name}: {e}" + (f"; {listed.note}" if listed.note else "")
        return listing

    try:
        return list(await asyncio.gather(*(one(s) for s in specs)))
    finally:
        if hub is not None:
            await hub.close()


__all__ = [
    "HubTags",
    "Listed",
    "RegistryTags",
    "SourceListing",
    "SourceSpec",
    "TagSource",
    "list_sources",
    "open_source",
]
