"""Modes of the Hub emulator's repository tags API (``hub.docker.com/v2/namespaces/NS/repositories/R/tags``)
that answer as the real API does when it is busy (reference §C.6, §F.4):

* `TagsApiModes.throttle`: its own rate limit, a ``429`` with the time to come back as a Unix time in
  ``X-Retry-After`` (docker/docs ``reference/api/hub/latest.yaml`` until 2025), as a Unix time in
  ``Retry-After`` (observed: docker/hub-feedback #2459) or as seconds in ``Retry-After`` (the docs since
  docker/docs #22916), with ``X-RateLimit-*`` headers;
* `TagsApiModes.move`: tags re-pushed while a client pages through them. The API pages by page number
  over tags sorted by last update, so a re-pushed tag jumps to the first page: the client sees one tag
  twice and misses another;
* `TagsApiModes.page_size`: smaller pages than the 100 a client asks for (so a few tags make many pages).

Switch them on an emulator with ``tags_api_modes(hub)``; the emulator's ``_tags_api`` consults them.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal

RetryHeader = Literal["x-retry-after", "retry-after-unix", "retry-after"]

#: The attribute of the emulator that holds its modes (created on first use).
_ATTR = "_tags_api_modes"


@dataclass(frozen=True)
class ThrottleRecord:
    """One request the tags API answered once throttling was switched on: when it came (Unix time), and the
    Unix time the 429 told it to come back at (None: it was served)."""

    at: float
    retry_at: float | None


class TagsApiModes:
    """The switches of one emulator's tags API; thread-safe (tests switch them while the emulator serves)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._throttle_left: int | None = 0  # 429s still to send; None: every request
        self._retry_in = 1.0
        self._header: RetryHeader = "x-retry-after"
        self._moves: dict[str, int | None] = {}  # repo → re-pushes still to do while listed (None: always)
        self._page_size = 100
        self._log: list[ThrottleRecord] = []

    # -- switches ------------------------------------------------------------------------------------

    def throttle(self, count: int | None, *, retry_in: float = 1.0, header: RetryHeader = "x-retry-after") -> None:
        """Answer the next *count* requests (None: every request until ``throttle(0)``) with 429, telling the
        client to come back in *retry_in* seconds, the way *header* says it."""
        with self._lock:
            self._throttle_left = count
            self._retry_in = retry_in
            self._header = header

    def move(self, repo: str, moves: int | None = 1) -> None:
        """While ``NS/REPO`` is listed, after each page that has a next one, re-push its oldest tag (it moves
        to the first page), *moves* times in all (None: on every page, for ever; 0: stop)."""
        with self._lock:
            self._moves[repo] = moves

    def page_size(self, size: int) -> None:
        """Serve at most *size* tags a page, whatever the client asks for (Hub's own cap is 100)."""
        with self._lock:
            self._page_size = max(1, size)

    @property
    def throttle_log(self) -> list[ThrottleRecord]:
        """Every request answered since `throttle` was first switched on (a copy)."""
        with self._lock:
            return list(self._log)

    # -- used by the emulator ------------------------------------------------------------------------

    def throttled(self) -> dict[str, str] | None:
        """The headers of a 429 if this request is to be throttled, else None."""
        now = time.time()
        with self._lock:
            left = self._throttle_left
            if left is not None and left <= 0:
                if self._log:
                    self._log.append(ThrottleRecord(now, None))
                return None
            if left is not None:
                self._throttle_left = left - 1
            header = self._header
            seconds = math.ceil(self._retry_in)
            back = now + seconds if header == "retry-after" else float(math.ceil(now + self._retry_in))
            self._log.append(ThrottleRecord(now, back))
        headers = {"X-RateLimit-Limit": "180", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(back))}
        if header == "x-retry-after":
            headers["X-Retry-After"] = str(int(back))
        elif header == "retry-after-unix":
            headers["Retry-After"] = str(int(back))
        else:
            headers["Retry-After"] = str(seconds)
        return headers

    def max_page_size(self) -> int:
        with self._lock:
            return self._page_size

    def take_move(self, repo: str) -> bool:
        """True if a tag of *repo* is to be re-pushed now (one move used)."""
        with self._lock:
            if repo not in self._moves:
                return False
            left = self._moves[repo]
            if left is None:
                return True
            if left <= 0:
                return False
            self._moves[repo] = left - 1
            return True


def tags_api_modes(hub: Any) -> TagsApiModes:
    """The tags API modes of emulator *hub* (a `hubmirror.testing.hub.HubEmulator`), created on first use."""
    modes = hub.__dict__.get(_ATTR)
    if modes is None:
        modes = hub.__dict__.setdefault(_ATTR, TagsApiModes())
    assert isinstance(modes, TagsApiModes)
    return modes


__all__ = ["RetryHeader", "TagsApiModes", "ThrottleRecord", "tags_api_modes"]
