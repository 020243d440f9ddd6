"""Docker Hub's repository tags API (reference §F.4, §C.6): every tag of a repository with its digest, push
time and platforms, 100 tags a request, without spending pulls.

``GET {api}/v2/namespaces/{ns}/repositories/{repo}/tags?page_size=100``, following ``next``. The shape
is not a published schema, so each field is checked: a result without a usable ``digest`` is simply a
tag whose digest is not known (the plan HEADs it).

The API has manners of its own, which this client copes with:

* **Its own rate limit.** It answers 429 with the time to come back: ``X-Retry-After`` holding a Unix
  time (as docker/docs ``reference/api/hub/latest.yaml`` said until 2025), ``Retry-After`` holding
  seconds (as it says now) or, as observed, a Unix time (docker/hub-feedback #2459), and
  ``X-RateLimit-Reset`` (a Unix time). The client waits that long (every request to the API waits, not
  only the one answered) and tries again, up to `THROTTLE_RETRIES` times and `MAX_THROTTLE_WAIT` seconds
  in all; after that it raises `HubApiThrottled`, and the caller falls back to ``tags/list`` and says so.
* **Pages that move.** It pages by page number over tags sorted by last update, so a tag re-pushed while
  the pages are read moves to the first page: one tag is listed twice, another not at all. Tags are
  de-duplicated by name and their number compared with the answer's ``count``; when they disagree, the
  pages are read again (at most `MAX_PASSES` listings), and if every listing disagrees, every tag seen in
  any of them is used (a note says so).

Any other failure raises `HubApiError`; the caller falls back to the registry's ``tags/list``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import aiohttp

from .._errors import HubmirrorError
from ..platform import Platform
from ..registry._proxy import proxy_for
from ._policy import TagInfo

log = logging.getLogger(__name__)

DEFAULT_HUB_API = "https://hub.docker.com"
PAGE_SIZE = 100
#: Pages followed at most in one listing (100 000 tags): an API that keeps answering ``next`` is cut off.
MAX_PAGES = 1000
#: Attempts of one request that fails with a 5xx or a broken connection.
ATTEMPTS = 3
#: 429s one request waits out before the API is given up for this listing, and the seconds waited at
#: most in all (a longer wait asked for is not waited: the listing falls back at once).
THROTTLE_RETRIES = 5
MAX_THROTTLE_WAIT = 180.0
#: The shortest wait after a 429 whose time to come back has passed already (a whole-second Unix time).
MIN_THROTTLE_WAIT = 0.25
#: Listings of one repository at most while its tags move between pages.
MAX_PASSES = 3

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
#: A ``Retry-After`` number this large is a Unix time, not a number of seconds (docker/hub-feedback #2459).
_UNIX_TIME = 1_000_000_000


class HubApiError(HubmirrorError):
    """The tags API did not answer usefully (status, transport, or shape) for repository *what*."""

    def __init__(self, what: str, reason: str) -> None:
        super().__init__(f"tags API for {what}: {reason}")
        self.reason = reason


class HubApiThrottled(HubApiError):
    """The tags API kept answering 429 (its own rate limit) beyond what the client waits out."""

    def __init__(self, what: str, reason: str, *, until: float | None = None) -> None:
        super().__init__(what, reason)
        self.until = until  # the Unix time the API last said to come back, if it said


@dataclass
class ApiTags:
    """The tags of one repository as the API listed them, and a note when listing them took more than once."""

    tags: list[TagInfo]
    note: str | None = None


@dataclass(frozen=True)
class TagImages:
    """What the tags API says of one tag's manifests (`HubTagsAPI.tag_images`): its platform images, and the
    ``unknown/unknown`` entries (attestation manifests) when the API lists them (it may leave them out)."""

    platforms: int
    attestations: int
    media_type: str | None = None  # the tag's manifest type, when the API gives it


class HubTagsAPI:
    """A client of the tags API at *base* (``https://hub.docker.com``; the emulator's URL in tests), shared
    by the sources of a run: a 429 makes every request to the API wait."""

    def __init__(
        self,
        base: str = DEFAULT_HUB_API,
        *,
        timeout: float = 60,
        throttle_retries: int = THROTTLE_RETRIES,
        max_throttle_wait: float = MAX_THROTTLE_WAIT,
    ) -> None:
        self.base = base.rstrip("/")
        self.requests = 0
        self.throttled = 0  # 429s answered
        self._throttle_retries = throttle_retries
        self._max_throttle_wait = max_throttle_wait
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=30)
        self._session: aiohttp.ClientSession | None = None
        self._paused_until = 0.0  # time.time() before which no request is sent (after a 429)

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()

    async def tags(self, namespace: str, repo: str) -> ApiTags:
        """Every tag of ``namespace/repo`` (all pages; listed again while the pages disagree with ``count``)."""
        what = f"{namespace}/{repo}"
        first = (
            f"{self.base}/v2/namespaces/{quote(namespace, safe='')}/repositories/{quote(repo, safe='')}"
            f"/tags?page_size={PAGE_SIZE}"
        )
        merged: dict[str, TagInfo] = {}
        count: int | None = None
        for n in range(1, MAX_PASSES + 1):
            listed, count = await self._listing(first, what)
            if count is None or len(listed) == count:
                note = None
                if n > 1:
                    note = f"tags moved between pages while they were listed; listed {n} times, the last one complete"
                return ApiTags(list(listed.values()), note)
            log.info("%s: tags API listed %d distinct tags, count says %d; listing again", what, len(listed), count)
            for name, tag in listed.items():
                merged[name] = tag  # a later listing's answer is the newer one
        note = (
            f"tags moved between pages in each of {MAX_PASSES} listings (count {count}); every tag seen in any "
            f"of them is used ({len(merged)})"
        )
        return ApiTags(list(merged.values()), note)

    async def _listing(self, url: str, what: str) -> tuple[dict[str, TagInfo], int | None]:
        """One pass over the pages from *url*: the tags by name (a tag listed twice once, its newest push
        kept) and the ``count`` of the last page."""
        listed: dict[str, TagInfo] = {}
        count: int | None = None
        seen: set[str] = set()
        nxt: str | None = url
        while nxt is not None:
            if nxt in seen or len(seen) >= MAX_PAGES:
                raise HubApiError(what, f"pagination does not end ({len(seen)} pages)")
            seen.add(nxt)
            page = await self._get(nxt, what)
            results = page.get("results")
            if not isinstance(results, list):
                raise HubApiError(what, "answer has no results list")
            for r in results:
                t = _tag(r)
                if t is None:
                    continue
                had = listed.get(t.name)
                if had is None or (
                    t.pushed is not None and (had.pushed is None or t.pushed.timestamp() > had.pushed.timestamp())
                ):
                    listed[t.name] = t
            total = page.get("count")
            count = total if isinstance(total, int) and not isinstance(total, bool) and total >= 0 else None
            link = page.get("next")
            nxt = link if isinstance(link, str) and link else None
        return listed, count

    async def tag_images(self, namespace: str, repo: str, tag: str) -> TagImages | None:
        """One tag's images (``GET …/repositories/{repo}/tags/{tag}``, no pull): how many platforms and
        attestation entries its index has, for the pull estimate. None when the API lists no images (it
        sometimes answers ``images: []``); `HubApiError` when it fails."""
        url = (
            f"{self.base}/v2/namespaces/{quote(namespace, safe='')}/repositories/{quote(repo, safe='')}"
            f"/tags/{quote(tag, safe='')}"
        )
        return _tag_images(await self._get(url, f"{namespace}/{repo}:{tag}"))

    async def _get(self, url: str, what: str) -> dict[str, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        last = ""
        failures = 0
        throttles = 0
        waited = 0.0
        while True:
            pause = self._paused_until - time.time()
            if pause > 0:
                await asyncio.sleep(pause)
            self.requests += 1
            until: float | None = None
            try:
                async with self._session.get(url, proxy=proxy_for(url), headers={"Accept": "application/json"}) as r:
                    if r.status == 200:
                        obj = await r.json(content_type=None)
                        if not isinstance(obj, dict):
                            raise HubApiError(what, "answer is not a JSON object")
                        return obj
                    last = f"HTTP {r.status}"
                    if r.status == 429:
                        until = retry_at(r.headers)
                    elif r.status < 500:
                        raise HubApiError(what, last)
            except (aiohttp.ClientError, TimeoutError, ValueError) as e:
                last = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            if last == "HTTP 429":
                self.throttled += 1
                throttles += 1
                now = time.time()
                wait = max(MIN_THROTTLE_WAIT, (until - now) if until is not None else 2.0**throttles)
                when = f" until {_clock(until)}" if until is not None else ""
                if throttles > self._throttle_retries or waited + wait > self._max_throttle_wait:
                    raise HubApiThrottled(
                        what,
                        f"rate limited (HTTP 429{when}; {throttles} tries, {waited:.0f} s waited)",
                        until=until,
                    )
                log.info("tags API for %s: HTTP 429; waiting %.1fs%s", what, wait, when)
                self._paused_until = max(self._paused_until, now + wait)
                waited += wait
                continue
            failures += 1
            if failures >= ATTEMPTS:
                raise HubApiError(what, last)
            await asyncio.sleep(0.5 * failures)


def retry_at(headers: Any) -> float | None:
    """The Unix time a 429 of the tags API says to come back at: ``X-Retry-After`` (a Unix time),
    ``Retry-After`` (seconds, or a Unix time as observed), else ``X-RateLimit-Reset`` (a Unix time)."""
    now = time.time()
    for name in ("X-Retry-After", "Retry-After", "X-RateLimit-Reset"):
        value = headers.get(name)
        if not value:
            continue
        try:
            number = float(str(value).strip())
        except ValueError:
            continue
        if number != number or number < 0:  # NaN, negative
            continue
        if name == "Retry-After" and number < _UNIX_TIME:
            return now + number
        return number
    return None


def _clock(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).strftime("%H:%M:%S UTC")


def _tag(r: object) -> TagInfo | None:
    if not isinstance(r, dict) or not isinstance(r.get("name"), str) or not r["name"]:
        return None
    digest = r.get("digest")
    pushed = _time(r.get("tag_last_pushed")) or _time(r.get("last_updated"))
    platforms: tuple[Platform, ...] | None = None
    images = r.get("images")
    if isinstance(images, list):
        plats = []
        for im in images:
            if isinstance(im, dict) and im.get("os") and im.get("architecture") and im.get("os") != "unknown":
                plats.append(Platform(str(im["os"]), str(im["architecture"]), str(im.get("variant") or "")))
        platforms = tuple(plats) if plats else None
    return TagInfo(
        r["name"],
        digest if isinstance(digest, str) and _DIGEST.match(digest) else None,
        pushed,
        platforms,
    )


def _tag_images(r: dict[str, Any]) -> TagImages | None:
    images = r.get("images")
    if not isinstance(images, list):
        return None
    entries = [im for im in images if isinstance(im, dict) and im.get("os")]
    platforms = sum(1 for im in entries if im.get("os") != "unknown")
    if not platforms:
        return None
    media_type = r.get("media_type")
    return TagImages(platforms, len(entries) - platforms, media_type if isinstance(media_type, str) else None)


def _time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


__all__ = ["DEFAULT_HUB_API", "ApiTags", "HubApiError", "HubApiThrottled", "HubTagsAPI", "TagImages", "retry_at"]
