"""Retry policy and error classification for registry responses (§C.6, §D.11).

Connection errors, 5xx, 408 and an abuse-limit 429 are retried with exponential backoff and full jitter,
honouring ``Retry-After`` and the ``retry-after: <duration>`` Docker Hub's abuse limit writes in its message
(`retry_after_hint`). A quota 429 (a manifest GET answered with ``ratelimit-remaining: 0``, or whose message
speaks of the pull rate limit; see `is_quota_429`) raises `QuotaExceeded` at once; 401/403 → `AuthError`;
404 → `NotFound`; anything else → `RegistryError`.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from .._errors import AuthError, NotFound, QuotaExceeded, RegistryError
from .ratelimit import RateLimit

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry. ``attempts`` counts the first try."""

    attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0
    #: Never wait longer than this for a ``Retry-After``; longer waits fail the request instead.
    max_retry_after: float = 300.0
    jitter: bool = True
    #: Further retries of a request answered with the abuse limit's 429 (each backing off, slowing the
    #: client's pace); after them such a 429 counts as an ordinary attempt.
    throttle_retries: int = 6

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number *attempt* (1-based); *retry_after* wins when given."""
        if retry_after is not None:
            return max(0.0, min(retry_after, self.max_retry_after))
        cap = min(self.max_delay, self.base_delay * (2 ** (attempt - 1)))
        return random.uniform(cap / 2, cap) if self.jitter else cap


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date; None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)  # delta-seconds (fractions tolerated)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if seconds == seconds else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (now if now is not None else time.time()))


@dataclass(frozen=True)
class ErrorDetail:
    """One entry of a registry's ``{"errors": [...]}`` body."""

    code: str
    message: str


def parse_errors(body: bytes) -> list[ErrorDetail]:
    """The ``errors`` list of an OCI error body; empty if the body is not one."""
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return []
    if not isinstance(obj, dict) or not isinstance(obj.get("errors"), list):
        return []
    out = []
    for e in obj["errors"]:
        if isinstance(e, dict):
            out.append(ErrorDetail(str(e.get("code") or ""), str(e.get("message") or "")))
    return out


def is_quota_429(status: int, body: bytes, headers: Mapping[str, str] | None = None, *, pull: bool = True) -> bool:
    """True for Docker Hub's pull-quota 429, False for any other 429 (the abuse limit on all requests).

    Only a manifest GET (*pull*) can exceed the pull quota, and it did when the answer's ``ratelimit-*``
    headers show ``ratelimit-remaining`` at 0, or when its message speaks of the pull rate limit (reference
    §C.6). The code ``TOOMANYREQUESTS`` alone says nothing: Docker Hub's abuse limit answers with it too
    (``retry-after: 985.86µs, allowed: 44000/minute``), and to paid accounts without any quota headers.
    """
    if status != 429 or not pull:
        return False
    if headers is not None:
        rl = RateLimit.from_headers(headers)
        if rl is not None and rl.remaining <= 0:
            return True
    return any(_PULL_LIMIT.search(text) for text in _messages(body))


#: "You have reached your pull rate limit", "… your unauthenticated pull rate limit": the quota's words.
_PULL_LIMIT = re.compile(r"\bpull\s+rate\s+limit", re.IGNORECASE)
#: Docker Hub's abuse limit: ``retry-after: 985.86µs, allowed: 44000/minute`` (a Go duration).
_RETRY_AFTER_TEXT = re.compile(r"retry[-_ ]after\s*[:=]\s*([0-9][0-9a-zA-Z.µμ]*)", re.IGNORECASE)
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h)?")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _messages(body: bytes) -> list[str]:
    """The messages of an error body (each entry's ``code: message``), or its text when it is not JSON."""
    errors = parse_errors(body)
    if errors:
        return [f"{e.code}: {e.message}" for e in errors]
    return [body[:4096].decode("utf-8", "replace")]


def parse_duration(text: str) -> float | None:
    """A Go duration (``985.86µs``, ``1m30s``, ``2.5s``; a bare number is seconds) in seconds; None if it is
    not one."""
    text = text.strip()
    if not text:
        return None
    pos, total = 0, 0.0
    while pos < len(text):
        m = _DURATION_PART.match(text, pos)
        if not m or (m.group(2) is None and (pos > 0 or m.end() != len(text))):
            return None
        total += float(m.group(1)) * _UNITS[m.group(2) or "s"]
        pos = m.end()
    return total


def retry_after_hint(headers: Mapping[str, str] | None, body: bytes = b"") -> float | None:
    """How long a 429 (or 503) asks to wait, in seconds: the ``Retry-After`` header, or the ``retry-after:
    <duration>`` of the message (Docker Hub's abuse limit), the longer when both are given; None if neither."""
    hints = []
    if headers is not None:
        header = parse_retry_after(_get(headers, "retry-after"))
        if header is not None:
            hints.append(header)
    if body:
        for text in _messages(body):
            m = _RETRY_AFTER_TEXT.search(text)
            seconds = parse_duration(m.group(1)) if m else None
            if seconds is not None:
                hints.append(seconds)
    return max(hints) if hints else None


def is_retryable(
    status: int, body: bytes = b"", headers: Mapping[str, str] | None = None, *, pull: bool = True
) -> bool:
    """True for statuses worth retrying: 408, 5xx gateway/server errors and a 429 that is not the pull
    quota's (the abuse limit: back off and retry)."""
    return status in RETRYABLE_STATUSES and not is_quota_429(status, body, headers, pull=pull)


def error_for(
    status: int,
    body: bytes,
    headers: Mapping[str, str],
    *,
    what: str,
    registry: str,
    repository: str | None = None,
) -> RegistryError:
    """The exception for a failed response. *what* says what was asked (``manifest library/x:1``)."""
    errors = parse_errors(body)
    code = errors[0].code if errors else None
    detail = "; ".join(f"{e.code}: {e.message}" if e.message else e.code for e in errors)
    if not detail:
        text = body[:200].decode("utf-8", "replace").strip()
        detail = text.splitlines()[0] if text and not text.startswith("<") else ""
    msg = f"{registry}: {what}: HTTP {status}" + (f" ({detail})" if detail else "")
    kw: dict[str, object] = {"status": status, "code": code, "registry": registry, "repository": repository}
    if status == 429 and is_quota_429(status, body, headers, pull=what.startswith("GET manifest")):
        return QuotaExceeded(msg, retry_after=retry_after_hint(headers, body), **kw)
    if status in (401, 403):
        return AuthError(msg, status=status, code=code, registry=registry, repository=repository)
    if status == 404:
        return NotFound(msg, status=status, code=code, registry=registry, repository=repository)
    return RegistryError(msg, status=status, code=code, registry=registry, repository=repository)


def _get(headers: Mapping[str, str], name: str) -> str | None:
    for k, v in headers.items():
        if k.lower() == name:
            return v
    return None
