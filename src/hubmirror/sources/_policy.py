"""Tag policies of one source, applied in a fixed order, each decision with the policy that made it.

Order: ``include``/``exclude`` regexes (whole-tag matches) → ``semver`` range (pre-releases dropped
unless allowed) → ``keep`` the newest N → ``platforms``. Signature, attestation and referrers tags
(``sha256-<hex>.sig|.att|.sbom``, ``sha256-<hex>``) are set aside before any policy: they follow their
subject image, they are not images to select.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from .._errors import HubmirrorError
from ..platform import Platform
from ._semver import SemverRange, Version, parse_version

#: Tags that belong to another image: cosign signatures/attestations/SBOMs, and the OCI referrers
#: tag-schema fallback index (``sha256-<hex>``).
ARTIFACT_TAG = re.compile(r"^sha256-(?P<hex>[0-9a-f]{64})(?:\.(?P<kind>sig|att|sbom))?$")

KeepBy = Literal["semver", "pushed"]


class PolicyError(HubmirrorError):
    """The policies cannot be applied to what the source listed (``keep_by: pushed`` without push times)."""


@dataclass(frozen=True)
class TagInfo:
    """A tag as a source lists it. Registries give only the name; Docker Hub's tags API gives more."""

    name: str
    digest: str | None = None
    pushed: datetime | None = None
    platforms: tuple[Platform, ...] | None = None  # None: not known from the listing


@dataclass(frozen=True)
class Dropped:
    """A tag a policy dropped, and why."""

    tag: str
    policy: str  # include | exclude | semver | prerelease | keep | platforms
    reason: str


@dataclass
class TagPolicy:
    """The policies of one source (all optional)."""

    include: Sequence[str] = ()
    exclude: Sequence[str] = ()
    semver: SemverRange | None = None
    prerelease: bool = False
    keep: int | None = None
    keep_by: KeepBy | None = None  # default: semver with a semver range, else push time if known
    platforms: Sequence[Platform] = ()
    _include: list[re.Pattern[str]] = field(default_factory=list, init=False, repr=False)
    _exclude: list[re.Pattern[str]] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        self._include = [re.compile(p) for p in self.include]
        self._exclude = [re.compile(p) for p in self.exclude]

    def apply(self, tags: Iterable[TagInfo]) -> tuple[list[TagInfo], list[Dropped]]:
        """The kept tags (newest first where an order is known) and every dropped tag with its policy.

        Raises `PolicyError` when ``keep`` is to keep the newest by push time (``keep_by: pushed``) and a
        candidate has no push time (the listing fell back to ``tags/list``): never another order instead."""
        dropped: list[Dropped] = []
        kept: list[TagInfo] = []
        versions: dict[str, Version | None] = {}
        for t in tags:
            if self._include and not any(p.fullmatch(t.name) for p in self._include):
                dropped.append(Dropped(t.name, "include", f"matches no include pattern ({', '.join(self.include)})"))
                continue
            hit = next((p for p in self._exclude if p.fullmatch(t.name)), None)
            if hit is not None:
                dropped.append(Dropped(t.name, "exclude", f"matches exclude pattern {hit.pattern}"))
                continue
            v = versions[t.name] = parse_version(t.name)
            if self.semver is not None:
                if v is None:
                    dropped.append(Dropped(t.name, "semver", "not a version"))
                    continue
                if v.is_prerelease and not self.prerelease:
                    why = f"pre-release {v.prerelease} (prerelease not allowed)"
                    dropped.append(Dropped(t.name, "prerelease", why))
                    continue
                if not self.semver.matches(v):
                    dropped.append(Dropped(t.name, "semver", f"outside {self.semver}"))
                    continue
            kept.append(t)
        by = self.order(kept)
        if self.keep is not None and by == "pushed":
            unknown = [t.name for t in kept if t.pushed is None]
            if unknown:
                raise PolicyError(
                    f"keep_by: pushed needs each tag's push time, which {len(unknown)} of {len(kept)} tags lack (only "
                    "Docker Hub's tags API gives them): refused rather than keeping the newest in another order"
                )
        kept = self._newest_first(kept, versions, by)
        if self.keep is not None and len(kept) > self.keep:
            newest = ", ".join(t.name for t in kept[: self.keep])
            what = "by version" if by == "semver" else "by push time"
            for t in kept[self.keep :]:
                dropped.append(Dropped(t.name, "keep", f"not among the newest {self.keep} {what} ({newest})"))
            kept = kept[: self.keep]
        if self.platforms:
            wanted = ", ".join(str(p) for p in self.platforms)
            still: list[TagInfo] = []
            for t in kept:
                if t.platforms is not None and not any(p.matches(w) for p in t.platforms for w in self.platforms):
                    have = ", ".join(str(p) for p in t.platforms) or "none"
                    dropped.append(Dropped(t.name, "platforms", f"has no platform of {wanted} (has {have})"))
                else:
                    still.append(t)
            kept = still
        return kept, dropped

    def order(self, tags: Sequence[TagInfo]) -> KeepBy:
        """How "newest" is decided: the configured ``keep_by``, else semver when a range is set or no
        push times are known, else push time."""
        if self.keep_by is not None:
            return self.keep_by
        if self.semver is None and tags and all(t.pushed is not None for t in tags):
            return "pushed"
        return "semver"

    @staticmethod
    def _newest_first(tags: list[TagInfo], versions: dict[str, Version | None], by: KeepBy) -> list[TagInfo]:
        def pushed(t: TagInfo) -> float:
            return -t.pushed.timestamp() if t.pushed is not None else float("inf")

        out = sorted(tags, key=lambda t: (pushed(t), t.name))  # ties: newest push, then name
        if by == "semver":
            # versions newest first (a release before its pre-releases); tags without a version last
            zero = Version((0, 0, 0))
            out.sort(key=lambda t: (versions.get(t.name) is not None, versions.get(t.name) or zero), reverse=True)
        return out


def artifact_subject(tag: str) -> tuple[str, str] | None:
    """``(subject digest, kind)`` of a signature/referrers tag (kind ``sig``, ``att``, ``sbom`` or
    ``referrers`` for the tag-schema index), else None."""
    m = ARTIFACT_TAG.match(tag)
    if not m:
        return None
    return f"sha256:{m.group('hex')}", m.group("kind") or "referrers"


__all__ = ["ARTIFACT_TAG", "Dropped", "KeepBy", "PolicyError", "TagInfo", "TagPolicy", "artifact_subject"]
