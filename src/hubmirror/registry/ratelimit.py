"""Docker Hub's ``ratelimit-*`` headers (reference §C.4): ``ratelimit-remaining: 76;w=21600``."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

# ASCII digits only: int() would take "٣" but not "²", which str.isdigit() both accept.
_ITEM = re.compile(r"\s*([0-9]+)\s*(?:;(.*))?", re.ASCII | re.DOTALL)


@dataclass(frozen=True)
class RateLimit:
    """The pull quota as the last manifest response reported it."""

    limit: int
    remaining: int
    window: int | None = None  # seconds
    source: str | None = None  # docker-ratelimit-source (IP or account id)
    observed_at: float = field(default_factory=time.time, compare=False)

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> RateLimit | None:
        """Parse the headers of a manifest response; None when absent (the caller is not limited)."""
        lim = _lookup(headers, "ratelimit-limit")
        rem = _lookup(headers, "ratelimit-remaining")
        if lim is None or rem is None:
            return None
        limit, window = _parse(lim)
        remaining, window2 = _parse(rem)
        if limit is None or remaining is None:
            return None
        return cls(limit, remaining, window or window2, _lookup(headers, "docker-ratelimit-source"))


def _lookup(headers: Mapping[str, str], name: str) -> str | None:
    for k, v in headers.items():
        if k.lower() == name:
            return v
    return None


def _parse(value: str) -> tuple[int | None, int | None]:
    """``100;w=21600`` → (100, 21600). A comma-separated policy list takes its first item."""
    first = value.split(",", 1)[0]
    m = _ITEM.fullmatch(first)
    if not m:
        return None, None
    window = None
    for param in (m.group(2) or "").split(";"):
        k, _, v = param.partition("=")
        if k.strip() == "w" and re.fullmatch(r"[0-9]+", v.strip(), re.ASCII):
            window = int(v.strip())
    return int(m.group(1)), window
