"""The prune step: tags this job owns, hubmirror created and that left the selection, deleted only when the
selection is certain, within --max-delete, and never with content a tag that stays reaches.

A tag is deleted, never the content something kept references:

* ``DELETE`` by tag first (the OCI distribution spec, Distribution 3, an OCI layout);
* where the registry refuses (Distribution 2.8 deletes by digest only, and a DELETE by digest removes every
  tag on that digest): when nothing that stays reaches the tag's manifest, it is deleted by digest; else the
  tag is moved onto a small placeholder manifest of its own (unique by an annotation) and the placeholder is
  deleted by digest, as regclient's ``TagDelete`` does. "Reaches" walks the closure of every tag that stays:
  its manifest, an index's children (and theirs), a manifest's ``subject``, and the image a signature or
  referrers tag (``sha256-<hex>[.sig|…]``) names.

Every deletion is logged in the state (`State.record_deletion`): the next run of any job on this destination
looks at the children of the indexes it keeps (`hubmirror.sync.planning.children_check_due`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field

import aiohttp

from .._errors import HubmirrorError, NotFound, RegistryError
from ..media import INDEX_TYPES, OCI_MANIFEST, Descriptor, Manifest
from ..plan import Plan
from ..report import Outcome, SyncReport
from ..sources import artifact_subject
from ..state import State, TagRecord
from ..store import Store
from .events import SyncEvents
from .planning import find_leaving
from .stores import Destination

#: Prune's default --max-delete: this share of the tags the job manages in the destination, rounded up.
MAX_DELETE_SHARE = 0.10

#: The annotation that makes each placeholder manifest unique (and recognisable: an interrupted prune's
#: placeholder is deleted by the next one).
PLACEHOLDER_ANNOTATION = "io.hubmirror.placeholder"
PLACEHOLDER_ARTIFACT = "application/vnd.hubmirror.placeholder.v1"
EMPTY_JSON = b"{}"
#: The OCI empty descriptor (``{}``): the placeholder's config and only layer.
EMPTY_DESCRIPTOR = Descriptor(
    "application/vnd.oci.empty.v1+json", "sha256:" + hashlib.sha256(EMPTY_JSON).hexdigest(), len(EMPTY_JSON)
)
_EMPTY_JSON_DESCRIPTOR = {"mediaType": EMPTY_DESCRIPTOR.media_type, "digest": EMPTY_DESCRIPTOR.digest, "size": 2}

#: Manifest requests in flight at once while walking what the tags that stay reach.
WALK_CONCURRENCY = 16

_ERRORS = (HubmirrorError, aiohttp.ClientError, TimeoutError, OSError)


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
    """Tags this job owns, hubmirror created and that left the selection: delete them with *enabled*, else
    report them kept.

    Deletes nothing, and reports a failure, when the selection is in doubt (`Plan.prune_blockers`) or more
    than *max_delete* tags would go (default `max_delete_default` of the tags the job manages there). A tag
    another job owns too is not deleted: this job lets go of it (`Plan.released`). Tags are deleted as the
    module says: never content a tag that stays reaches.

    In a real run, what left is looked at again after the copies (`find_leaving` with the report): a tag
    moved in this run no longer holds its old image, whose signature tags are deleted in this run.
    With *dry_run* nothing is deleted: the report says what a real run would do (refuse, with the same
    failure and exit code, or delete), counting the tags the plan's copies would add as managed.
    """
    if not dry_run:
        await find_leaving(plan, state=state, dest=dest, report=report)
    if not plan.leaving and not plan.released and not (enabled and plan.prune_blockers):
        return
    if not enabled:
        _keep_leaving(plan, report, "left the selection; run with --prune to delete")
        _keep_released(plan, report)
        return
    managed = await _managed(plan, state, dest, dry_run=dry_run)
    refusals = prune_refusals(plan, managed=managed, max_delete=max_delete)
    if refusals:
        refused = "a real run would refuse, nothing would be deleted" if dry_run else "refused, nothing deleted"
        report.add(Outcome.FAILED, "--prune", dest.name, reason=f"{refused}: {'; '.join(refusals)}")
        kept = "a real run's prune would refuse" if dry_run else "prune refused"
        _keep_leaving(plan, report, f"left the selection; {kept} (see the --prune row)")
        _keep_released(plan, report)
        return
    _keep_released(plan, report)
    if dry_run:
        for rec in plan.leaving:
            why = "would delete (left the selection)"
            report.add(Outcome.PRUNED, rec.source_ref, rec.dest_repo, [rec.tag], digest=rec.upstream_digest, reason=why)
        return
    if plan.job is not None:
        await state.aio.release_tags(plan.job, [(r.dest_repo, r.tag) for r in plan.released])
    if not plan.leaving:
        return
    events.phase(f"pruning {len(plan.leaving)} tags that left the selection")
    by_repo: dict[str, list[TagRecord]] = {}
    for rec in plan.leaving:
        by_repo.setdefault(rec.dest_repo, []).append(rec)
    for key, records in by_repo.items():
        repo_prune = RepoPrune(dest.store, dest.repo(key), records)
        for done in await repo_prune.run():
            rec = done.record
            if done.deleted is not None:
                digest, how = done.deleted
                await state.aio.record_deletion(rec.dest_repo, rec.tag, digest, how, run_id=report.run_id)
            if done.outcome is Outcome.PRUNED:
                await state.aio.forget_tag(rec.dest_repo, rec.tag)
            report.add(
                done.outcome, rec.source_ref, rec.dest_repo, [rec.tag], digest=rec.upstream_digest, reason=done.reason
            )
        if repo_prune.error is not None:
            report.add(Outcome.FAILED, "--prune", key, reason=f"nothing deleted in {key}: {repo_prune.error}")


def prune_refusals(plan: Plan, *, managed: int, max_delete: int | None) -> list[str]:
    """Why prune must delete nothing in this run (empty: it may): the plan's blockers, and more tags
    leaving than *max_delete* (default `max_delete_default` of the *managed* tags of the job there)."""
    refusals = list(plan.prune_blockers)
    limit = max_delete if max_delete is not None else max_delete_default(managed)
    if len(plan.leaving) > limit:
        whose = "this job manages" if plan.job is not None else "hubmirror manages"
        how = "--max-delete" if max_delete is not None else f"the default --max-delete: 10 % of the {managed} tags"
        how += "" if max_delete is not None else f" {whose} there"
        refusals.append(
            f"it would delete {len(plan.leaving)} tags, more than {limit} ({how}); "
            f"give --max-delete {len(plan.leaving)} if that is intended"
        )
    return refusals


async def _managed(plan: Plan, state: State, dest: Destination, *, dry_run: bool) -> int:
    """The tags the job manages in the destination when it prunes: those hubmirror created that it owns.
    A dry run counts them as the real run will: the records it selects (which the real run claims) and each
    new tag a copy or retag writes (a tag already recorded keeps its flag; one found at the destination
    first is not created by hubmirror)."""
    records = await state.aio.tags(prefix=dest.prefix)
    owners = await state.aio.tag_owners(prefix=dest.prefix)
    selected = {(dest.key(t.dest_repo), t.tag) for t in plan.targets if t.tag is not None} if dry_run else set()

    def mine(r: TagRecord) -> bool:
        key = (r.dest_repo, r.tag)
        return plan.job is None or plan.job in owners.get(key, ()) or key in selected

    managed = sum(1 for r in records if r.created_by_hubmirror and mine(r))
    if not dry_run:
        return managed
    known = {(r.dest_repo, r.tag) for r in records}
    new = {
        (dest.key(item.dest_repo), tag)
        for item in plan.items
        for tag in item.tags
        if tag not in item.preexisting and (dest.key(item.dest_repo), tag) not in known
    }
    return managed + len(new)


def _keep_leaving(plan: Plan, report: SyncReport, reason: str) -> None:
    """Report every tag that left the selection as kept, for *reason*."""
    for rec in plan.leaving:
        report.add(Outcome.KEPT, rec.source_ref, rec.dest_repo, [rec.tag], digest=rec.upstream_digest, reason=reason)


def _keep_released(plan: Plan, report: SyncReport) -> None:
    """Report the tags that left this job's selection but that other jobs still own as kept, naming them."""
    for rec in plan.released:
        others = plan.co_owners.get((rec.dest_repo, rec.tag))
        if others and rec.created_by_hubmirror:
            why = f"left this job's selection; kept for job {', '.join(others)}, which owns it too"
            report.add(Outcome.KEPT, rec.source_ref, rec.dest_repo, [rec.tag], digest=rec.upstream_digest, reason=why)


# ---------------------------------------------------------------------------------------- deleting tags


@dataclass
class Pruned:
    """What became of one tag: the outcome, why, and what was deleted (digest, how) if anything."""

    record: TagRecord
    outcome: Outcome
    reason: str | None = None
    deleted: tuple[str, str] | None = None


@dataclass
class Kept:
    """What the tags that stay in a repository reach: every digest, and the tags on each top digest."""

    digests: set[str] = field(default_factory=set)
    tags: dict[str, list[str]] = field(default_factory=dict)  # digest → the kept tags pointing at it


def placeholder(tag: str) -> Manifest:
    """A small OCI image manifest of the empty descriptor, made unique by an annotation: a tag is moved onto
    it, then it is deleted by digest (which takes that tag, and only that tag, with it)."""
    obj = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": PLACEHOLDER_ARTIFACT,
        "config": _EMPTY_JSON_DESCRIPTOR,
        "layers": [_EMPTY_JSON_DESCRIPTOR],
        "annotations": {PLACEHOLDER_ANNOTATION: f"{tag} {uuid.uuid4().hex}"},
    }
    return Manifest(json.dumps(obj, indent=2).encode(), OCI_MANIFEST)


class RepoPrune:
    """Deletes *records*' tags from *repo* of *store* (each still holding what hubmirror recorded), never
    deleting content that a tag that stays reaches."""

    def __init__(self, store: Store, repo: str, records: Iterable[TagRecord]) -> None:
        self.store, self.repo = store, repo
        self.records = list(records)
        #: Why nothing could be deleted in the repository (what the tags that stay reach was not readable).
        self.error: str | None = None

    async def run(self) -> list[Pruned]:
        out: list[Pruned] = []
        current: dict[str, tuple[TagRecord, str]] = {}  # tag → (record, the digest it holds)
        for rec in self.records:
            try:
                head = await self.store.head_manifest(self.repo, rec.tag)
                if head is None:
                    out.append(Pruned(rec, Outcome.PRUNED, "already gone from the destination"))
                elif head.digest == rec.dest_digest:
                    current[rec.tag] = (rec, head.digest)
                elif await self._is_placeholder(head.digest):
                    await self._delete_digest(head.digest)
                    why = "an interrupted prune had moved it onto a placeholder; the placeholder is deleted"
                    out.append(Pruned(rec, Outcome.PRUNED, why, (head.digest, "placeholder")))
                else:
                    why = f"the tag now points at {head.digest[:19]}, not what hubmirror wrote"
                    out.append(Pruned(rec, Outcome.KEPT, why))
            except _ERRORS as e:
                out.append(Pruned(rec, Outcome.KEPT, f"not deleted: {e}"))
        if not current:
            return out
        try:
            kept = await self.kept(set(current))
        except _ERRORS as e:
            self.error = f"what the tags that stay reference could not be read: {e}"
            why = "not deleted: what the tags that stay reference could not be read (see the --prune row)"
            return out + [Pruned(rec, Outcome.KEPT, why) for rec, _ in current.values()]
        gone: dict[str, str] = {}  # digest deleted by digest → the tag deleted first with it
        for tag, (rec, digest) in current.items():
            if digest in gone:
                out.append(Pruned(rec, Outcome.PRUNED, f"deleted with {gone[digest]} (same digest)"))
                continue
            try:
                done = await self._delete(rec, digest, kept)
            except _ERRORS as e:
                done = Pruned(rec, Outcome.FAILED, f"while deleting: {e}; look at the tags on {digest[:19]}")
            if done.deleted == (digest, "digest"):
                gone[digest] = tag
            out.append(done)
        return out

    async def kept(self, deleting: set[str]) -> Kept:
        """What every tag of the repository but *deleting* reaches (see the module)."""
        sem = asyncio.Semaphore(WALK_CONCURRENCY)
        out = Kept()
        tags = [t for t in await self.store.list_tags(self.repo) if t not in deleting]

        async def head(tag: str) -> tuple[str, Descriptor | None]:
            async with sem:
                return tag, await self.store.head_manifest(self.repo, tag)

        frontier: set[str] = set()
        for tag, desc in await asyncio.gather(*(head(t) for t in tags)):
            if desc is None:
                continue
            out.tags.setdefault(desc.digest, []).append(tag)
            frontier.add(desc.digest)
            subject = artifact_subject(tag)
            if subject is not None:
                frontier.add(subject[0])
        walked: set[str] = set()

        async def get(digest: str) -> Manifest | None:
            async with sem:
                try:
                    return await self.store.get_manifest(self.repo, digest)
                except NotFound:
                    return None

        while frontier:
            batch = sorted(frontier - walked)
            walked |= frontier
            out.digests |= frontier
            frontier = set()
            for m in await asyncio.gather(*(get(d) for d in batch)):
                if m is None:
                    continue
                for child in m.children:
                    out.digests.add(child.digest)
                    if child.media_type in INDEX_TYPES or not child.media_type:
                        frontier.add(child.digest)
                if m.subject is not None:
                    frontier.add(m.subject.digest)
            frontier -= walked
        return out

    async def _delete(self, rec: TagRecord, digest: str, kept: Kept) -> Pruned:
        reached = digest in kept.digests
        original = await self.store.get_manifest(self.repo, digest) if reached else None
        try:
            await self.store.delete_manifest(self.repo, rec.tag)
        except RegistryError as e:
            if not _refused(e):
                return Pruned(rec, Outcome.KEPT, f"delete refused: {e}")
        except _ERRORS as e:
            return Pruned(rec, Outcome.KEPT, f"delete failed: {e}")
        else:
            if original is not None:
                await self._still_there(original, kept)
            return Pruned(rec, Outcome.PRUNED, None, (digest, "tag"))
        if original is None:
            # Nothing that stays reaches it: deleting the manifest takes only tags that are pruned now.
            try:
                await self._delete_digest(digest)
            except _ERRORS as e:
                return Pruned(rec, Outcome.KEPT, f"delete refused: {e}")
            why = "deleted by digest (the registry cannot delete a tag alone; nothing that stays references it)"
            return Pruned(rec, Outcome.PRUNED, why, (digest, "digest"))
        return await self._untag(rec, original, kept)

    async def _untag(self, rec: TagRecord, original: Manifest, kept: Kept) -> Pruned:
        """Move the tag onto a placeholder and delete the placeholder: the tag goes, its content stays."""
        stand_in = placeholder(rec.tag)
        try:
            if not await self.store.has_blob(self.repo, EMPTY_DESCRIPTOR):
                await self.store.put_blob(self.repo, EMPTY_DESCRIPTOR, _chunks(EMPTY_JSON))
            await self.store.put_manifest(self.repo, rec.tag, stand_in)
        except _ERRORS as e:
            return Pruned(rec, Outcome.KEPT, f"not deleted: the tag could not be moved onto a placeholder ({e})")
        try:
            await self._delete_digest(stand_in.digest)
        except _ERRORS as e:
            try:  # never leave the tag on the placeholder
                await self.store.put_manifest(self.repo, rec.tag, original)
            except _ERRORS as e2:
                why = f"delete refused ({e}); the tag is left on a placeholder the next prune deletes ({e2})"
                return Pruned(rec, Outcome.FAILED, why)
            return Pruned(rec, Outcome.KEPT, f"delete refused: {e}")
        await self._still_there(original, kept)
        shared = kept.tags.get(original.digest)
        why = (
            f"untagged; its content stays: {'kept tag(s) ' + ', '.join(sorted(shared)) if shared else 'what stays'} "
            "reference(s) it (the registry deletes by digest only: the tag was moved onto a placeholder, "
            "which was deleted)"
        )
        return Pruned(rec, Outcome.PRUNED, why, (stand_in.digest, "placeholder"))

    async def _still_there(self, original: Manifest, kept: Kept) -> None:
        """After a tag was deleted, the content that stays must still be there: a registry that deleted the
        manifest with the tag gets it back, with the tags that stay on it."""
        if await self.store.head_manifest(self.repo, original.digest) is not None:
            return
        await self.store.put_manifest(self.repo, original.digest, original)
        for tag in kept.tags.get(original.digest, []):
            await self.store.put_manifest(self.repo, tag, original)

    async def _delete_digest(self, digest: str) -> None:
        with contextlib.suppress(NotFound):
            await self.store.delete_manifest(self.repo, digest)

    async def _is_placeholder(self, digest: str) -> bool:
        """Is *digest* a placeholder an interrupted prune left (its annotation says so)?"""
        try:
            m = await self.store.get_manifest(self.repo, digest)
        except NotFound:
            return False
        ann = m.json.get("annotations")
        return m.media_type == OCI_MANIFEST and isinstance(ann, dict) and PLACEHOLDER_ANNOTATION in ann


def _refused(e: RegistryError) -> bool:
    """Does *e* say the registry cannot delete a tag alone (Distribution 2.8: 400 ``DIGEST_INVALID``)?"""
    return e.status in (400, 404, 405) or e.code in ("UNSUPPORTED", "DIGEST_INVALID", "MANIFEST_UNKNOWN")


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


__all__ = [
    "MAX_DELETE_SHARE",
    "PLACEHOLDER_ANNOTATION",
    "Kept",
    "Pruned",
    "RepoPrune",
    "max_delete_default",
    "placeholder",
    "prune",
    "prune_refusals",
]
