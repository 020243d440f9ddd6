"""Versions in image tags, and semver ranges over them.

Container tags are not semver, so the parsing is deliberately loose and documented:

* An optional ``v`` prefix, then 1 to 4 dot-separated numbers: ``v1.2.3``, ``1.27``, ``3``, ``1.2.3.4``.
  Missing components count as 0 when compared (``1.27`` compares as ``1.27.0``).
* What follows a ``-`` is either a **pre-release** (``-rc1``, ``-rc.1``, ``-beta``, ``-alpha2``,
  ``-preview3``, ``-dev``, ``-snapshot``, optionally followed by a variant: ``1.28.0-rc.1-alpine``) or a
  **variant** (``-alpine``, ``-slim-bookworm``): a variant does not change the version, so ``1.27.3-alpine``
  is version 1.27.3 (pick variants with include/exclude regexes). ``+build`` metadata is ignored.
* Anything else (``latest``, ``bookworm``, ``sha-1a2b3c``) has no version: a ``semver`` policy drops it.

A range is comparators separated by spaces (all must hold), alternatives separated by ``||``:
``>=1.27 <2``, ``>1.2.3``, ``<=2``, ``=1.4.2``, ``!=1.5.0``, ``~1.27`` (>=1.27.0 <1.28.0),
``^1.2`` (>=1.2.0 <2.0.0), a bare or wildcard version as a prefix (``1.27``, ``1.27.x``, ``1.*``).
Pre-releases never match unless the policy allows them (``prerelease: true``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import total_ordering

from .._errors import ConfigError

_VERSION = re.compile(
    r"^[vV]?(?P<core>\d+(?:\.\d+){0,3})"
    r"(?:-(?P<rest>[0-9A-Za-z][0-9A-Za-z.\-_]*))?"
    r"(?:\+[0-9A-Za-z.\-]+)?$"
)
_PRE = re.compile(
    r"^(?P<pre>(?:alpha|beta|rc|pre|preview|dev|snapshot|a|b)(?:[.\-_]?\d+)*)(?:-(?P<variant>.*))?$", re.IGNORECASE
)


@total_ordering
@dataclass(frozen=True)
class Version:
    """A tag's version: numbers (padded to 3), pre-release (empty: a release) and variant."""

    numbers: tuple[int, ...]
    prerelease: str = ""
    variant: str = ""
    parts: int = 3  # how many numbers the tag spelled out

    @property
    def is_prerelease(self) -> bool:
        return bool(self.prerelease)

    def _key(self) -> tuple[tuple[int, ...], int, tuple[tuple[int, int | str], ...]]:
        # a release sorts after its pre-releases; pre-releases compare piece by piece (rc2 < rc10)
        pieces = re.findall(r"\d+|[A-Za-z]+", self.prerelease)
        pre = tuple((0, int(p)) if p.isdigit() else (1, p.lower()) for p in pieces)
        return self.numbers, 0 if self.prerelease else 1, pre

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key() < other._key()

    def core_lt(self, other: Version) -> bool:
        return self.numbers < other.numbers


def parse_version(tag: str) -> Version | None:
    """The `Version` a tag spells, or None (see the module docstring for the rules)."""
    m = _VERSION.match(tag)
    if not m:
        return None
    nums = [int(n) for n in m.group("core").split(".")]
    parts = len(nums)
    nums += [0] * (3 - len(nums))
    rest = m.group("rest") or ""
    pre, variant = "", rest
    if rest:
        p = _PRE.match(rest)
        if p:
            pre, variant = p.group("pre"), p.group("variant") or ""
    return Version(tuple(nums), pre, variant, parts)


@dataclass(frozen=True)
class _Comparator:
    op: str  # >= > <= < = != prefix
    version: tuple[int, ...]
    parts: int = 3

    def matches(self, v: Version) -> bool:
        n = v.numbers
        w = self.version
        width = max(len(n), len(w))
        n = n + (0,) * (width - len(n))
        w = w + (0,) * (width - len(w))
        if self.op == "prefix":
            return n[: self.parts] == w[: self.parts]
        if self.op == ">=":
            return n >= w
        if self.op == ">":
            return n > w
        if self.op == "<=":
            return n <= w
        if self.op == "<":
            return n < w
        if self.op == "=":
            return n == w
        return n != w  # !=


_COMPARATOR = re.compile(r"^(?P<op>>=|<=|==|!=|>|<|=|~|\^)?\s*[vV]?(?P<ver>\d+(?:\.(?:\d+|[xX*]))*|[xX*])$")


@dataclass(frozen=True)
class SemverRange:
    """A parsed range (see the module docstring); `matches` says whether a version is in it."""

    text: str
    alternatives: tuple[tuple[_Comparator, ...], ...]

    @classmethod
    def parse(cls, text: str) -> SemverRange:
        """Parse *text*; `ConfigError` quoting it when it is not a range."""
        alts: list[tuple[_Comparator, ...]] = []
        for alt in text.split("||"):
            tokens = _tokens(alt)
            if not tokens:
                raise ConfigError(f"invalid semver range {text!r}: empty alternative")
            comps: list[_Comparator] = []
            for tok in tokens:
                m = _COMPARATOR.match(tok)
                if not m:
                    raise ConfigError(
                        f"invalid semver range {text!r}: {tok!r} is not a comparator (e.g. >=1.27 <2, ~1.4, ^2, 1.x)"
                    )
                comps += _expand(m.group("op") or "", m.group("ver"))
            alts.append(tuple(comps))
        return cls(text, tuple(alts))

    def matches(self, v: Version) -> bool:
        return any(all(c.matches(v) for c in alt) for alt in self.alternatives)

    def __str__(self) -> str:
        return self.text


def _tokens(text: str) -> list[str]:
    """Split on spaces, joining an operator written apart from its version (``>= 1.2``)."""
    out: list[str] = []
    for tok in text.split():
        if out and re.fullmatch(r">=|<=|==|!=|>|<|=|~|\^", out[-1]):
            out[-1] += tok
        else:
            out.append(tok)
    return out


def _expand(op: str, ver: str) -> list[_Comparator]:
    pieces = ver.split(".")
    known: list[int] = []
    for p in pieces:
        if p in ("x", "X", "*"):
            break
        known.append(int(p))
    wildcard = len(known) < len(pieces)
    n = len(known)
    nums = tuple(known + [0] * (3 - n)) if n < 3 else tuple(known)
    if n == 0:
        return [] if op in ("", "=", "==", ">=", "<=") else [_Comparator(">=", (0, 0, 0))]
    if op in ("", "=", "==") and (wildcard or (op == "" and n < 3)):
        return [_Comparator("prefix", nums, n)]
    if op == "~":
        upper = list(known[:2]) if n >= 2 else [known[0]]
        upper[-1] += 1
        return [_Comparator(">=", nums), _Comparator("<", tuple(upper + [0] * (3 - len(upper))))]
    if op == "^":
        first = next((i for i, k in enumerate(known) if k != 0), n - 1)
        upper = list(known[: first + 1])
        upper[-1] += 1
        return [_Comparator(">=", nums), _Comparator("<", tuple(upper + [0] * (3 - len(upper))))]
    if op in ("", "==", "="):
        return [_Comparator("=", nums)]
    return [_Comparator(op, nums)]


__all__ = ["SemverRange", "Version", "parse_version"]
