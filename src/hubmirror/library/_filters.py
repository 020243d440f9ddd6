"""Select what to mirror: repositories (globs or an images-list file), tags (regexes) and platforms."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from .._errors import HubmirrorError, LibraryError
from ..platform import Platform
from ._model import TagGroup

_NAME_RE = re.compile(r"[a-z0-9*?\[\]][a-z0-9._\-*?\[\]]*")
_PREFIXES = ("docker.io/library/", "index.docker.io/library/", "docker.io/", "index.docker.io/", "library/")


def normalize_image_name(name: str) -> str:
    """``docker.io/library/x``, ``library/x`` and ``x`` all mean the library repository ``x``."""
    name = name.strip()
    for prefix in _PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def read_images_file(path: Path | str) -> tuple[str, ...]:
    """Repository names (or globs) from a file: one a line, ``#`` comments and blank lines ignored."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as err:
        raise LibraryError(f"cannot read images file: {err.strerror}", file=str(p)) from None
    except UnicodeDecodeError:
        raise LibraryError("images file is not UTF-8 text", file=str(p)) from None
    names: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name = normalize_image_name(line)
        if not _NAME_RE.fullmatch(name):
            raise LibraryError(
                f"invalid image name {line!r} (expected e.g. 'golang' or 'python*')", file=str(p), line=number
            )
        names.append(name)
    return tuple(names)


def _compile(patterns: Iterable[str], what: str) -> tuple[re.Pattern[str], ...]:
    compiled: list[re.Pattern[str]] = []
    for pat in patterns:
        try:
            compiled.append(re.compile(pat))
        except re.error as err:
            raise HubmirrorError(f"invalid {what} regex {pat!r}: {err}") from None
    return tuple(compiled)


@dataclass(frozen=True)
class LibraryFilter:
    """Which repositories, tags and platforms to mirror.

    * ``repositories``: globs (``python``, ``*jdk*``); empty means every repository.
    * ``include`` / ``exclude``: tag regexes matched against the whole tag (``re.fullmatch``). A tag is
      selected when it matches some include (or there are none) and no exclude.
    * ``platforms``: platforms to keep (``linux/arm64`` also matches ``linux/arm64/v8``); empty means every
      Linux platform. Windows platforms are dropped unless ``windows`` is set or a Windows platform is named.
    """

    repositories: tuple[str, ...] = ()
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    platforms: tuple[Platform, ...] = ()
    windows: bool = False

    @classmethod
    def build(
        cls,
        *,
        images: Sequence[str] = (),
        images_file: Path | str | None = None,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        platforms: Sequence[str | Platform] = (),
        windows: bool = False,
    ) -> LibraryFilter:
        """Build a filter from CLI/config values; raises on a bad name, regex or platform."""
        repos = [normalize_image_name(i) for i in images if i.strip()]
        if images_file is not None:
            repos += read_images_file(images_file)
        plats = tuple(p if isinstance(p, Platform) else Platform.parse(p) for p in platforms)
        f = cls(tuple(repos), tuple(include), tuple(exclude), plats, windows)
        f._patterns()  # validate the regexes now
        return f

    def _patterns(self) -> tuple[tuple[re.Pattern[str], ...], tuple[re.Pattern[str], ...]]:
        return _compile(self.include, "--include"), _compile(self.exclude, "--exclude")

    def match_repository(self, name: str) -> bool:
        return not self.repositories or any(fnmatch.fnmatchcase(name, g) for g in self.repositories)

    def match_tag(self, tag: str) -> bool:
        inc, exc = self._patterns()
        return (not inc or any(p.fullmatch(tag) for p in inc)) and not any(p.fullmatch(tag) for p in exc)

    def select_platforms(self, platforms: Iterable[Platform]) -> tuple[Platform, ...]:
        """The subset of *platforms* this filter keeps, in the given order."""
        kept: list[Platform] = []
        for p in platforms:
            if self.platforms:
                if any(p.matches(w) for w in self.platforms):
                    kept.append(p)
            elif p.os == "linux" or (self.windows and p.os == "windows"):
                kept.append(p)
        return tuple(kept)

    def apply(self, groups: Iterable[TagGroup]) -> list[TagGroup]:
        """Filtered copies of *groups*: selected tags and platforms, ``upstream_platforms`` kept in full.

        A group with no selected tag or no selected platform is dropped.
        """
        inc, exc = self._patterns()
        result: list[TagGroup] = []
        for g in groups:
            if not self.match_repository(g.repo):
                continue
            tags = tuple(
                t
                for t in g.tags
                if (not inc or any(p.fullmatch(t) for p in inc)) and not any(p.fullmatch(t) for p in exc)
            )
            plats = self.select_platforms(g.upstream_platforms)
            if tags and plats:
                result.append(replace(g, tags=tags, platforms=plats, upstream_platforms=g.upstream_platforms))
        return result
