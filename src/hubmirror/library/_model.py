"""The library data model: entries, repositories, tag groups (one Hub manifest each) and whole libraries."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from .._errors import LibraryError
from ..platform import Platform

#: bashbrew architecture name → OCI platform (reference §A.6). Windows' os.version is unknown from the file.
ARCHITECTURES: Mapping[str, Platform] = MappingProxyType(
    {
        "amd64": Platform("linux", "amd64"),
        "arm32v5": Platform("linux", "arm", "v5"),
        "arm32v6": Platform("linux", "arm", "v6"),
        "arm32v7": Platform("linux", "arm", "v7"),
        "arm64v8": Platform("linux", "arm64", "v8"),
        "i386": Platform("linux", "386"),
        "mips64le": Platform("linux", "mips64le"),
        "ppc64le": Platform("linux", "ppc64le"),
        "riscv64": Platform("linux", "riscv64"),
        "s390x": Platform("linux", "s390x"),
        "windows-amd64": Platform("windows", "amd64"),
    }
)

#: Fields that may be overridden per architecture as ``<arch>-<Field>`` (reference §A.4).
ARCH_FIELDS: tuple[str, ...] = ("GitRepo", "GitFetch", "GitCommit", "Directory", "File", "Builder")

_ATTR = {
    "GitRepo": "git_repo",
    "GitFetch": "git_fetch",
    "GitCommit": "git_commit",
    "Directory": "directory",
    "File": "file",
    "Builder": "builder",
}


def platform_sort_key(p: Platform) -> tuple[int, str, str, str, str]:
    """Linux first, then by architecture/variant (a stable, readable order)."""
    return (0 if p.os == "linux" else 1, p.os, p.architecture, p.variant, p.os_version)


@dataclass(frozen=True)
class ParseWarning:
    """Something bashbrew silently accepts but a human may want to know (an unknown field name)."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


@dataclass(frozen=True)
class Entry:
    """One image entry of a library file, after inheritance from the global paragraph and merging."""

    tags: tuple[str, ...]
    shared_tags: tuple[str, ...] = ()
    architectures: tuple[str, ...] = ("amd64",)
    git_repo: str = ""
    git_fetch: str = "refs/heads/master"
    git_commit: str = ""
    directory: str = "."
    file: str = "Dockerfile"
    builder: str = ""
    constraints: tuple[str, ...] = ()
    maintainers: tuple[str, ...] = ()
    #: ``(key, value)`` pairs such as ``("arm64v8-GitCommit", "abc…")``, sorted by key.
    arch_values: tuple[tuple[str, str], ...] = ()
    #: Library file name (``library/golang``) and the line where this entry's first paragraph starts.
    source_file: str = ""
    line: int = 0

    def arch_value(self, field_name: str, arch: str) -> str:
        """Resolve *field_name* (``GitCommit``, ``Directory``, …) for *arch*: the arch value if non-empty."""
        if field_name not in _ATTR:
            raise KeyError(f"{field_name!r} cannot be overridden per architecture")
        key = f"{arch}-{field_name}"
        for k, v in self.arch_values:
            if k == key and v:
                return v
        return str(getattr(self, _ATTR[field_name]))

    def build_inputs(self, arch: str) -> tuple[str, ...]:
        """What bashbrew builds *arch* from: (GitRepo, GitFetch, GitCommit, Directory, File, Builder)."""
        return tuple(self.arch_value(f, arch) for f in ARCH_FIELDS)

    @property
    def platforms(self) -> tuple[Platform, ...]:
        """The OCI platforms of this entry's images (one per known architecture)."""
        return tuple(ARCHITECTURES[a] for a in self.architectures if a in ARCHITECTURES)

    @property
    def windows(self) -> bool:
        """True when any architecture of this entry is a Windows one."""
        return any(a.startswith("windows-") for a in self.architectures)

    @property
    def key(self) -> str:
        """The entry's identity in bashbrew: its first tag."""
        return self.tags[0] if self.tags else ""


@dataclass(frozen=True)
class TagGroup:
    """A set of tags of one repository that resolve to one manifest (index) on Docker Hub.

    ``platforms`` are the platforms selected (after filtering); ``upstream_platforms`` the full set the
    upstream index carries, so a sync knows when it must write a filtered index.
    """

    repo: str
    tags: tuple[str, ...]
    platforms: tuple[Platform, ...]
    shared: bool
    windows: bool
    #: Hashable summary of the build inputs: per entry, per arch, (arch, GitRepo, GitFetch, GitCommit,
    #: Directory, File, Builder).
    build_key: tuple[tuple[str, ...], ...]
    #: Keys (first tags) of the entries whose images this group's index combines.
    entries: tuple[str, ...] = ()
    upstream_platforms: tuple[Platform, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if not self.upstream_platforms:
            object.__setattr__(self, "upstream_platforms", self.platforms)

    @property
    def platforms_filtered(self) -> bool:
        """True when the selected platforms are a strict subset of the upstream index's."""
        return set(self.platforms) != set(self.upstream_platforms)

    @property
    def references(self) -> tuple[str, ...]:
        """``repo:tag`` for every tag."""
        return tuple(f"{self.repo}:{t}" for t in self.tags)


@dataclass(frozen=True)
class Repository:
    """A parsed library file: ``library/<name>`` defines ``docker.io/library/<name>``."""

    name: str
    entries: tuple[Entry, ...]
    maintainers: tuple[str, ...] = ()
    file: str = ""
    #: True for the legacy line-based format (§A.8).
    legacy: bool = False
    warnings: tuple[ParseWarning, ...] = ()
    #: Number of paragraphs (or legacy lines) folded into an earlier entry with identical artifacts.
    merged: int = 0

    def tag_groups(self) -> tuple[TagGroup, ...]:
        """Every manifest this file defines: one group per entry's Tags, one per SharedTag group (§A.5)."""
        groups: list[TagGroup] = []
        for e in self.entries:
            groups.append(
                TagGroup(
                    repo=self.name,
                    tags=e.tags,
                    platforms=tuple(sorted(set(e.platforms), key=platform_sort_key)),
                    shared=False,
                    windows=e.windows,
                    build_key=_build_key([e]),
                    entries=(e.key,),
                )
            )
        # bashbrew GetSharedTagGroups: shared tags grouped by the exact list of entries carrying them.
        order: list[tuple[int, ...]] = []
        by_key: dict[tuple[int, ...], list[str]] = {}
        seen: set[str] = set()
        for e in self.entries:
            for s in e.shared_tags:
                if s in seen:
                    continue
                seen.add(s)
                carriers = tuple(i for i, other in enumerate(self.entries) if s in other.shared_tags)
                if carriers not in by_key:
                    order.append(carriers)
                    by_key[carriers] = []
                by_key[carriers].append(s)
        for carriers in order:
            members = [self.entries[i] for i in carriers]
            plats = {p for m in members for p in m.platforms}
            groups.append(
                TagGroup(
                    repo=self.name,
                    tags=tuple(by_key[carriers]),
                    platforms=tuple(sorted(plats, key=platform_sort_key)),
                    shared=True,
                    windows=any(m.windows for m in members),
                    build_key=_build_key(members),
                    entries=tuple(m.key for m in members),
                )
            )
        return tuple(groups)

    def all_tags(self) -> tuple[str, ...]:
        """Every tag name (Tags then SharedTags), without duplicates."""
        return tuple(dict.fromkeys(t for g in self.tag_groups() for t in g.tags))


def _build_key(entries: list[Entry]) -> tuple[tuple[str, ...], ...]:
    return tuple(sorted((a, *e.build_inputs(a)) for e in entries for a in e.architectures if a in ARCHITECTURES))


@dataclass(frozen=True)
class LibraryStats:
    """Counts over one library commit (what ``hubmirror library stats`` prints)."""

    commit: str
    files: int
    repositories: int
    entries: int
    tags: int
    shared_tags: int
    platform_images: int
    windows_entries: int
    errors: int
    tag_groups: int
    legacy_files: int

    def as_dict(self) -> dict[str, int | str]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Library:
    """The library at one official-images commit: parsed repositories plus per-file errors."""

    commit: str
    repositories: Mapping[str, Repository]
    errors: tuple[LibraryError, ...] = ()
    #: Files in ``library/`` that are not image definitions (``MAINTAINERS``), skipped.
    skipped: tuple[str, ...] = ()
    #: Number of files in ``library/`` (parsed, failed and skipped).
    files: int = 0

    def tag_groups(self) -> Iterator[TagGroup]:
        """Every tag group of every repository, repositories in name order."""
        for name in sorted(self.repositories):
            yield from self.repositories[name].tag_groups()

    def stats(self) -> LibraryStats:
        entries = [e for r in self.repositories.values() for e in r.entries]
        tags: set[tuple[str, str]] = set()
        shared: set[tuple[str, str]] = set()
        groups = 0
        for name, repo in self.repositories.items():
            for e in repo.entries:
                tags.update((name, t) for t in e.tags)
                shared.update((name, t) for t in e.shared_tags)
            groups += len(repo.tag_groups())
        return LibraryStats(
            commit=self.commit,
            files=self.files,
            repositories=len(self.repositories),
            entries=len(entries),
            tags=len(tags | shared),
            shared_tags=len(shared),
            platform_images=sum(len(e.architectures) for e in entries),
            windows_entries=sum(1 for e in entries if e.windows),
            errors=len(self.errors),
            tag_groups=groups,
            legacy_files=sum(1 for r in self.repositories.values() if r.legacy),
        )
