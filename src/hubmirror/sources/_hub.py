"""Docker Hub's repository tags API (reference §F.4): every tag of a repository with its digest, push
time and platforms, 100 tags a request, without spending pulls.

``GET {api}/v2/namespaces/{ns}/repositories/{repo}/tags?page_size=100``, following ``next``. The shape
is not a published schema, so each field is checked: a result without a usable ``digest`` is simply a
tag whose digest is not known (the plan HEADs it). Any failure raises `HubApiError`; the caller falls
back to the registry's ``tags/list``.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

import aiohttp

from .._errors import HubmirrorError
from ..platform import Platform
from ..registry._proxy import proxy_for
from ._policy import TagInfo

DEFAULT_HUB_API = "https://hub.docker.com"
PAGE_SIZE = 100
#: Pages followed at most (100 000 tags): an API that keeps answering ``next`` is cut off, not followed forever.
MAX_PAGES = 1000
ATTEMPTS = 2

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


class HubApiError(HubmirrorError):
    """The tags API did not answer usefully (status, transport, or shape)."""


@dataclass(frozen=True)
class TagImages:
    """What the tags API says of one tag's manifests (`HubTagsAPI.tag_images`): its platform images, and the
    ``unknown/unknown`` entries (attestation manifests) when the API lists them (it may leave them out)."""

    platforms: int
    attestations: int
    media_type: str | None = None  # the tag's manifest type, when the API gives it


class HubTagsAPI:
    """A client of the tags API at *base* (``https://hub.docker.com``; the emulator's URL in tests)."""

    def __init__(self, base: str = DEFAULT_HUB_API, *, timeout: float = 60) -> None:
        self.base = base.rstrip("/")
        self.requests = 0
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=30)
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()

    async def tags(self, namespace: str, repo: str) -> list[TagInfo]:
        """Every tag of ``namespace/repo`` (all pages)."""
        url: str | None = (
            f"{self.base}/v2/namespaces/{quote(namespace, safe='')}/repositories/{quote(repo, safe='')}"
            f"/tags?page_size={PAGE_SIZE}"
        )
        out: list[TagInfo] = []
        seen: set[str] = set()
        while url is not None:
            if url in seen or len(seen) >= MAX_PAGES:
                raise HubApiError(f"tags API for {namespace}/{repo}: pagination does not end ({len(seen)} pages)")
            seen.add(url)
            page = await self._get(url, f"{namespace}/{repo}")
            results = page.get("results")
            if not isinstance(results, list):
                raise HubApiError(f"tags API for {namespace}/{repo}: answer has no results list")
            out += [t for r in results if (t := _tag(r)) is not None]
            nxt = page.get("next")
            url = nxt if isinstance(nxt, str) and nxt else None
        return out

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
        for attempt in range(1, ATTEMPTS + 1):
            self.requests += 1
            try:
                async with self._session.get(url, proxy=proxy_for(url), headers={"Accept": "application/json"}) as r:
                    if r.status == 200:
                        obj = await r.json(content_type=None)
                        if not isinstance(obj, dict):
                            raise HubApiError(f"tags API for {what}: answer is not a JSON object")
                        return obj
                    last = f"HTTP {r.status}"
                    if r.status < 500:
                        break
            except (aiohttp.ClientError, TimeoutError, ValueError) as e:
                last = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            if attempt < ATTEMPTS:
                await asyncio.sleep(0.5 * attempt)
        raise HubApiError(f"tags API for {what}: {last}")


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


__all__ = ["DEFAULT_HUB_API", "HubApiError", "HubTagsAPI", "TagImages"]
