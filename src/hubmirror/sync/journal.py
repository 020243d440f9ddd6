"""What a work item's copy tells the state while it runs (`ItemJournal`, the sync's `CopyJournal`), and what
the next run makes of what a crash left (`settle_intents`).

* Before the PUT of each destination tag an intent row is committed (``tag_intents``: the tag, the digest
  it is about to hold, and the record it becomes); after the PUT it is turned into the tag's record. A
  process that dies in between (kill -9, a power cut, a second Ctrl-C) leaves the intent: the next run
  HEADs the tag and records it as hubmirror's when it holds the intended digest, or drops the intent when
  it does not. So a tag hubmirror pushed is never taken for a foreign one (which prune would never delete).
* The signature and referrers tags that follow an image get the same (`FollowJournal`).
* Every source manifest the copy read and the destination does not hold when the item ends (its
  destination failed, its budget ran out, it was stopped) is kept in ``pending_manifests``, and the next
  attempt reads it from there instead of spending a pull on it again.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import aiohttp

from .._errors import HubmirrorError
from ..copy import CopyJournal
from ..media import Manifest
from ..plan import WorkItem, selection_text
from ..referrers import Subject, subject_repository
from ..state import State, TagRecord
from .stores import Destination

log = logging.getLogger(__name__)


class ItemJournal(CopyJournal):
    """The journal of one work item's copy: intents and records of its tags, its source manifests kept."""

    def __init__(self, item: WorkItem, *, state: State, dest: Destination, run_id: int) -> None:
        self.item, self.state, self.dest, self.run_id = item, state, dest, run_id
        self._key = dest.key(item.dest_repo)
        self._targets = {t.tag: t for t in item.targets if t.tag is not None}
        self._fetched: dict[str, Manifest] = {}
        self._stored: set[str] = set()

    def record(self, tag: str, manifest: Manifest) -> TagRecord:
        """The record *tag* gets when it holds *manifest*."""
        t = self._targets.get(tag)
        return TagRecord(
            dest_repo=self._key,
            tag=tag,
            source_ref=t.canonical if t is not None else self.item.canonical,
            upstream_digest=self.item.upstream_digest,
            dest_digest=manifest.digest,
            synced_at=datetime.now(UTC),
            run_id=self.run_id,
            # a tag that was there before hubmirror knew it (--overwrite) stays not created by hubmirror
            created_by_hubmirror=tag not in self.item.preexisting,
            platforms=selection_text(self.item.platforms),
        )

    async def tagging(self, repo: str, tag: str, manifest: Manifest) -> None:
        await self.state.aio.intend_tag(self.record(tag, manifest))

    async def tagged(self, repo: str, tag: str, manifest: Manifest) -> None:
        await self.state.aio.confirm_tag(self.record(tag, manifest))

    async def kept(self, digest: str) -> Manifest | None:
        held = await self.state.aio.kept_manifest(digest)
        return None if held is None else Manifest(held[1], held[0])

    def fetched(self, manifest: Manifest) -> None:
        self._fetched[manifest.digest] = manifest

    def stored(self, digest: str) -> None:
        self._stored.add(digest)

    async def close(self, *, done: bool) -> None:
        """The item ended (*done*: its copy finished): keep what it fetched and did not store; forget any
        kept manifest the destination now holds (only those: another job sharing the state may still need
        the others)."""
        unstored = [m for d, m in self._fetched.items() if d not in self._stored and not done]
        await self.state.aio.keep_manifests((m.digest, m.media_type, m.data) for m in unstored)
        finished = self._stored | ({self.item.upstream_digest} if done else set())
        if finished:
            await self.state.aio.drop_manifests(finished)


class FollowJournal(CopyJournal):
    """The journal of the signature and referrers tags written for one subject image: an intent before
    each PUT, the tag's record after it (as `record_followed` records it: created by hubmirror, which wrote
    it). `record_followed` records them all again once the phase is done."""

    def __init__(self, subject: Subject, *, state: State, dest: Destination, run_id: int) -> None:
        self.subject, self.state, self.dest, self.run_id = subject, state, dest, run_id

    def record(self, tag: str, manifest: Manifest) -> TagRecord:
        return TagRecord(
            dest_repo=self.dest.key(self.subject.dest_repo),
            tag=tag,
            source_ref=f"{subject_repository(self.subject)}:{tag}",
            upstream_digest=manifest.digest,
            dest_digest=manifest.digest,
            synced_at=datetime.now(UTC),
            run_id=self.run_id,
            created_by_hubmirror=True,
            platforms="",
        )

    async def tagging(self, repo: str, tag: str, manifest: Manifest) -> None:
        await self.state.aio.intend_tag(self.record(tag, manifest))

    async def tagged(self, repo: str, tag: str, manifest: Manifest) -> None:
        await self.state.aio.confirm_tag(self.record(tag, manifest))


async def settle_intents(state: State, dest: Destination, *, repo: str | None = None) -> tuple[int, int]:
    """Tags of *dest* (of its repository *repo* only: a state name) whose push was begun and never confirmed
    (the process died in between): recorded when the destination tag holds the intended digest (as the
    intent says: created by hubmirror unless it was there before), dropped when it does not; kept for a later
    run when the destination cannot say. Returns (recorded, dropped)."""
    recorded = dropped = 0
    for rec in await state.aio.intents(prefix=repo or dest.prefix):
        if repo is not None and rec.dest_repo != repo:
            continue
        try:
            there = await dest.store.head_manifest(dest.repo(rec.dest_repo), rec.tag)
        except (HubmirrorError, aiohttp.ClientError, TimeoutError, OSError) as e:
            log.warning("%s:%s: cannot settle an unfinished push yet: %s", rec.dest_repo, rec.tag, e)
            continue
        if there is not None and there.digest == rec.dest_digest:
            await state.aio.record_tags([rec])
            recorded += 1
        else:
            await state.aio.drop_intent(rec.dest_repo, rec.tag, rec.dest_digest)
            dropped += 1
    return recorded, dropped


__all__ = ["FollowJournal", "ItemJournal", "settle_intents"]
