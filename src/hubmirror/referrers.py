"""Signatures, attestations and referrers follow their images (issue 10).

After a sync's images are in place (so a signature never arrives before its subject), for every image
mirrored verbatim — of a tag source, of the library or of an image list:

* **cosign** tags that name the image's digest (``sha256-<hex>.sig``, ``.att``, ``.sbom``) are copied under
  the same tag (the `Copier` brings their blobs; unchanged ones cost a HEAD). A tag source's listing names
  them; for library and list images the source repository's tags are listed once per run (no pulls).
* **OCI 1.1 referrers**: the source's tag-schema index ``sha256-<hex>`` (what registries without the
  referrers API, such as Distribution 2.8, hold) is copied with the manifests it lists, digests unchanged.
  For an image copied in this run the source's referrers API (``GET /v2/<repo>/referrers/<digest>``) is
  asked too; what it lists is copied by digest, and where the destination has no referrers API the
  destination's ``sha256-<hex>`` index is written (merged with what it already lists: nothing is dropped).

Docker Hub's in-toto attestations are entries of the image index itself and come with the index copy.
An image copied with a platform filter has a new digest, so its signatures (of the upstream digest)
are not copied. The signature and ``sha256-<hex>`` tags copied are recorded in the state like the image
tags (`Followed.record`): created by hubmirror when it wrote them, so ``--prune`` deletes them once their
subject is no longer held by a selected tag (and never one it found already there).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from ._errors import BudgetExhausted, HubmirrorError, NotFound, QuotaExceeded
from .copy import Copier, CopyJournal, CopyResult
from .media import OCI_INDEX, Descriptor, Manifest
from .plan import Plan, Target
from .report import Outcome, SyncReport
from .sources import TagInfo, artifact_subject
from .store import Store
from .store.registry import RegistryStore

log = logging.getLogger(__name__)

#: Source repositories whose tags are listed at once (library and list images' signatures).
LIST_CONCURRENCY = 8


def referrers_tag(digest: str) -> str:
    """The tag-schema fallback tag of *digest*: ``sha256:abc…`` → ``sha256-abc…``."""
    return digest.replace(":", "-", 1)


@dataclass
class Subject:
    """An image now at the destination whose signatures and referrers should follow it."""

    canonical: str  # source reference of one of its tags, for the report
    source_registry: str
    source_repo: str
    dest_repo: str  # repository inside the destination store
    digest: str  # the source (= destination) digest
    copied: bool  # copied in this run: the source's referrers API is asked too
    artifacts: list[TagInfo] = field(default_factory=list)  # the listing's tags naming this digest


@dataclass
class Followed:
    """One signature/referrer tag or manifest brought along (or not)."""

    subject: Subject
    ref: str  # the tag, or the digest of a referrer found through the API
    outcome: str  # copied | up-to-date | failed | deferred
    digest: str | None = None
    reason: str | None = None
    pulls: int = 0
    bytes: int = 0
    source_digest: str | None = None  # the source's digest of *ref* (differs from *digest* when merged)
    written: bool = False  # hubmirror wrote the tag in this run (it was not at the destination so)

    @property
    def is_tag(self) -> bool:
        """A tag now at the destination (not a referrer by digest, not a failure)."""
        return self.outcome in ("copied", "up-to-date") and self.digest is not None and not _is_digest(self.ref)


def _is_digest(ref: str) -> bool:
    return ref.startswith("sha256:")


def match_artifacts(tags: Sequence[TagInfo], digests: set[str]) -> dict[str, list[TagInfo]]:
    """subject digest → the signature/referrer tags among *tags* that name it."""
    out: dict[str, list[TagInfo]] = {}
    for t in tags:
        found = artifact_subject(t.name)
        if found is not None and found[0] in digests:
            out.setdefault(found[0], []).append(t)
    return out


class ReferrerFollower:
    """Copies signatures and referrers of subjects with the sync's copiers (one per source registry)."""

    def __init__(
        self,
        copier: Callable[[str], Copier],
        sources: Callable[[str], Store],
        dest: Store,
        journal: Callable[[Subject], CopyJournal] | None = None,
    ) -> None:
        self.copier, self.sources, self.dest = copier, sources, dest
        #: The journal of the tags written for a subject (the sync records each as it is pushed).
        self.journal = journal or (lambda _subject: CopyJournal())
        self._api: dict[str, bool] = {}  # registry → has the referrers API (learnt once per run)

    async def follow(self, subject: Subject) -> list[Followed]:
        """Bring *subject*'s cosign tags, tag-schema index and (if copied now) API referrers along."""
        done: list[Followed] = []
        # cosign tags first, the tag-schema index last (it is written after what it lists)
        for tag in sorted(subject.artifacts, key=lambda t: artifact_subject(t.name) == (subject.digest, "referrers")):
            done.append(await self._copy_tag(subject, tag))
        if subject.copied:
            done += await self._api_referrers(subject)
        return done

    async def _copy_tag(self, subject: Subject, tag: TagInfo) -> Followed:
        src = Descriptor("", tag.digest, 0) if tag.digest else None
        if artifact_subject(tag.name) == (subject.digest, "referrers"):
            keep = await self._dest_only_entries(subject, tag.name)
            if keep:  # the destination lists referrers the source does not: merge, never drop
                return await self._guard(subject, tag.name, self._merge_index(subject, tag.name, keep))

        async def run() -> CopyResult:
            return await self.copier(subject.source_registry).copy(
                subject.source_repo,
                tag.name,
                subject.dest_repo,
                [tag.name],
                platforms=None,
                source=src,
                journal=self.journal(subject),
            )

        return await self._guard(subject, tag.name, run())

    async def _dest_only_entries(self, subject: Subject, tag: str) -> list[dict[str, Any]]:
        """Entries of the destination's ``sha256-<hex>`` index that the source's does not list."""
        try:
            there = await self.dest.get_manifest(subject.dest_repo, tag)
        except NotFound:
            return []
        source = await self.sources(subject.source_registry).head_manifest(subject.source_repo, tag)
        if source is not None and source.digest == there.digest:
            return []
        theirs = {d.digest for d in await self._source_entries(subject, tag)}
        return [m for m in there.json.get("manifests") or [] if m.get("digest") not in theirs]

    async def _source_entries(self, subject: Subject, tag: str) -> list[Descriptor]:
        m = await self.sources(subject.source_registry).get_manifest(subject.source_repo, tag)
        return m.children

    async def _merge_index(self, subject: Subject, tag: str, extra: list[dict[str, Any]]) -> CopyResult:
        copier = self.copier(subject.source_registry)
        result = await copier.copy(subject.source_repo, tag, subject.dest_repo, [], platforms=None)
        src = await self.dest.get_manifest(subject.dest_repo, result.digest)
        merged = await self._write_index(subject, list(src.json.get("manifests") or []) + extra)
        result.digest = merged
        result.tags_written = [tag]
        return result

    async def _api_referrers(self, subject: Subject) -> list[Followed]:
        store = self.sources(subject.source_registry)
        if not isinstance(store, RegistryStore) or self._api.get(subject.source_registry) is False:
            return []
        try:
            found = await store.client.get_referrers(subject.source_repo, subject.digest)
        except (HubmirrorError, aiohttp.ClientError, TimeoutError) as e:
            return [Followed(subject, f"referrers of {subject.digest}", "failed", reason=str(e))]
        self._api[subject.source_registry] = found is not None
        if not found:
            return []
        out = []
        for entry in found:
            digest = str(entry["digest"])

            async def run(d: str = digest) -> CopyResult:
                return await self.copier(subject.source_registry).copy(
                    subject.source_repo, d, subject.dest_repo, [], platforms=None
                )

            out.append(await self._guard(subject, digest, run()))
        if all(f.outcome in ("copied", "up-to-date") for f in out) and not await self._dest_has_api(subject):
            try:
                await self._write_index(subject, found, only_add=True)
            except HubmirrorError as e:
                out.append(Followed(subject, referrers_tag(subject.digest), "failed", reason=str(e)))
        return out

    async def _dest_has_api(self, subject: Subject) -> bool:
        if not isinstance(self.dest, RegistryStore):
            return False
        try:
            return await self.dest.client.get_referrers(subject.dest_repo, subject.digest) is not None
        except HubmirrorError:
            return False

    async def _write_index(self, subject: Subject, entries: Sequence[dict[str, Any]], *, only_add: bool = False) -> str:
        """Write the destination's ``sha256-<hex>`` index with *entries* plus those it already lists."""
        tag = referrers_tag(subject.digest)
        try:
            there = list((await self.dest.get_manifest(subject.dest_repo, tag)).json.get("manifests") or [])
        except NotFound:
            there = []
        have = {m.get("digest") for m in there}
        merged = there + [e for e in entries if e.get("digest") not in have]
        if only_add and len(merged) == len(there):
            return ""
        data = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": merged}, indent=3).encode()
        index = Manifest(data, OCI_INDEX)
        journal = self.journal(subject)
        await journal.tagging(subject.dest_repo, tag, index)
        await self.dest.put_manifest(subject.dest_repo, tag, index)
        await journal.tagged(subject.dest_repo, tag, index)
        return index.digest

    async def _guard(self, subject: Subject, ref: str, work: Any) -> Followed:
        try:
            result: CopyResult = await work
        except (BudgetExhausted, QuotaExceeded) as e:
            return Followed(subject, ref, "deferred", reason=str(e))
        except (HubmirrorError, aiohttp.ClientError, TimeoutError, OSError) as e:
            log.warning("%s: %s: %s", subject.canonical, ref, e)
            return Followed(subject, ref, "failed", reason=str(e) or type(e).__name__)
        outcome = "up-to-date" if result.up_to_date else "copied"
        return Followed(
            subject,
            ref,
            outcome,
            result.digest,
            pulls=result.source_manifest_gets,
            bytes=result.bytes_copied,
            source_digest=result.source_digest,
            written=bool(result.tags_written),
        )


async def follow_referrers(
    plan: Plan,
    report: SyncReport,
    *,
    copier: Callable[[str], Copier],
    sources: Callable[[str], Store],
    dest: Store,
    dest_key: Callable[[str], str],
    listed: bool = False,
    journal: Callable[[Subject], CopyJournal] | None = None,
) -> list[Followed]:
    """The sync's last copy phase: signatures and referrers of the images its tag sources now hold
    (copied, retagged or up to date, verbatim), each reported as an item of its own; with *listed*, those
    of its library and image-list images too (their source repositories' tags are listed for them).
    Returns what was followed (the caller records the tags in the state; *journal*, if given, is told of
    each tag around its PUT, as the copies of the images are)."""
    done = {
        (i.dest, i.digest): i.outcome
        for i in report.items
        if i.outcome in (Outcome.COPIED, Outcome.RETAGGED, Outcome.UP_TO_DATE) and i.digest
    }
    pairs = [(u.target, u.upstream_digest) for u in plan.up_to_date]
    pairs += [(t, i.upstream_digest) for i in plan.items for t in i.targets]
    subjects: dict[tuple[str, str], Subject] = {}

    def subject(target: Target, digest: str) -> Subject | None:
        """The subject of *target*'s image when it is now at the destination, verbatim."""
        outcome = done.get((dest_key(target.dest_repo), digest))
        if outcome is None or target.platforms is not None:
            return None
        key = (target.dest_repo, digest)
        if key not in subjects:
            subjects[key] = Subject(
                target.canonical,
                target.source_registry,
                target.source_repo,
                target.dest_repo,
                digest,
                copied=outcome is Outcome.COPIED,
            )
        return subjects[key]

    by_source: set[str] = set()
    for listing in plan.sources:
        names = {f"{listing.name}:{t.name}" for t in listing.kept}
        by_source |= names
        if listing.error or not listing.spec.signatures or listing.spec.platforms:
            continue
        mine = {s.digest: s for t, d in pairs if t.canonical in names and (s := subject(t, d)) is not None}
        _attach(mine, listing.artifacts)
    if listed:
        # Library and image-list images: one tag list per source repository names their cosign tags.
        repos: dict[tuple[str, str], dict[str, Subject]] = {}
        for target, digest in pairs:
            if target.canonical not in by_source and (s := subject(target, digest)) is not None:
                repos.setdefault((target.source_registry, target.source_repo), {})[digest] = s
        sem = asyncio.Semaphore(LIST_CONCURRENCY)

        async def list_artifacts(registry: str, repo: str, mine: dict[str, Subject]) -> None:
            async with sem:
                try:
                    tags = await sources(registry).list_tags(repo)
                except (HubmirrorError, aiohttp.ClientError, TimeoutError, OSError) as e:
                    log.warning("%s/%s: tags not listed, its signatures are not followed: %s", registry, repo, e)
                    return
            _attach(mine, [TagInfo(t) for t in tags if artifact_subject(t) is not None])

        async with asyncio.TaskGroup() as tg:
            for (registry, repo), mine in repos.items():
                tg.create_task(list_artifacts(registry, repo, mine))
    follower = ReferrerFollower(copier, sources, dest, journal)
    outcomes = {
        "copied": Outcome.COPIED,
        "up-to-date": Outcome.UP_TO_DATE,
        "failed": Outcome.FAILED,
        "deferred": Outcome.DEFERRED,
    }
    followed: list[Followed] = []
    for subj in subjects.values():
        if not subj.artifacts and not subj.copied:
            continue
        repo = subject_repository(subj)
        for f in await follower.follow(subj):
            followed.append(f)
            by_digest = _is_digest(f.ref)
            report.add(
                outcomes[f.outcome],
                f"{repo}@{f.ref}" if by_digest else f"{repo}:{f.ref}",
                dest_key(subj.dest_repo),
                [] if by_digest else [f.ref],
                digest=f.digest,
                reason=f.reason or f"follows {subj.canonical}",
                bytes=f.bytes,
                pulls=f.pulls,
            )
    return followed


def _attach(subjects: dict[str, Subject], tags: Sequence[TagInfo]) -> None:
    """Give each subject (by digest) the signature/referrer tags among *tags* that name it."""
    for digest, found in match_artifacts(tags, set(subjects)).items():
        known = {t.name for t in subjects[digest].artifacts}
        subjects[digest].artifacts += [t for t in found if t.name not in known]


def subject_repository(subject: Subject) -> str:
    """The source repository as its canonical reference names it: ``docker.io/library/python``."""
    ref = subject.canonical.split("@", 1)[0]
    name, _, tag = ref.rpartition(":")
    return name if name and "/" not in tag else ref


__all__ = [
    "Followed",
    "ReferrerFollower",
    "Subject",
    "follow_referrers",
    "match_artifacts",
    "referrers_tag",
    "subject_repository",
]
