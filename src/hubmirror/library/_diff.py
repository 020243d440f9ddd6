"""Diff the library between two commits: added, removed and changed tag groups, and a per-tag view.

Only files that ``git diff --name-status`` reports as changed are parsed again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .._errors import LibraryError
from ._git import LibrarySource, TreeFile
from ._load import ParseCache
from ._model import Repository, TagGroup
from ._parser import is_image_file


@dataclass(frozen=True)
class GroupChange:
    """A tag group present in both commits (matched by a shared ``repo:tag``) whose content changed."""

    old: TagGroup
    new: TagGroup

    @property
    def tags_changed(self) -> bool:
        return set(self.old.tags) != set(self.new.tags)

    @property
    def platforms_changed(self) -> bool:
        return set(self.old.platforms) != set(self.new.platforms)

    @property
    def rebuild(self) -> bool:
        """The build inputs (GitCommit, Directory, …) of an architecture present before and after changed:
        a new build, hence a new digest, is coming. Added or dropped architectures are `platforms_changed`."""
        old, new = _inputs_by_arch(self.old), _inputs_by_arch(self.new)
        return any(old[a] != new[a] for a in old.keys() & new.keys())

    @property
    def tags_added(self) -> tuple[str, ...]:
        return tuple(t for t in self.new.tags if t not in self.old.tags)

    @property
    def tags_removed(self) -> tuple[str, ...]:
        return tuple(t for t in self.old.tags if t not in self.new.tags)


@dataclass
class LibraryDiff:
    """What changed in the library between two commits."""

    old_commit: str
    new_commit: str
    added: list[TagGroup] = field(default_factory=list)
    removed: list[TagGroup] = field(default_factory=list)
    changed: list[GroupChange] = field(default_factory=list)
    repositories_added: list[str] = field(default_factory=list)
    repositories_removed: list[str] = field(default_factory=list)
    repositories_changed: list[str] = field(default_factory=list)
    #: ``(repo, tag)`` that exist only in the new / only in the old commit.
    tags_added: list[tuple[str, str]] = field(default_factory=list)
    tags_removed: list[tuple[str, str]] = field(default_factory=list)
    #: ``(repo, tag)`` present in both whose manifest will differ: platforms or build inputs changed.
    tags_changed: list[tuple[str, str]] = field(default_factory=list)
    #: Files that failed to parse on either side; they are left out of the group lists.
    errors: list[LibraryError] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed or self.repositories_added or self.repositories_removed)

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready summary."""

        def group(g: TagGroup) -> dict[str, object]:
            return {
                "repo": g.repo,
                "tags": list(g.tags),
                "platforms": [str(p) for p in g.platforms],
                "shared": g.shared,
                "windows": g.windows,
            }

        return {
            "old": self.old_commit,
            "new": self.new_commit,
            "repositories_added": self.repositories_added,
            "repositories_removed": self.repositories_removed,
            "repositories_changed": self.repositories_changed,
            "added": [group(g) for g in self.added],
            "removed": [group(g) for g in self.removed],
            "changed": [
                {
                    "old": group(c.old),
                    "new": group(c.new),
                    "tags_changed": c.tags_changed,
                    "platforms_changed": c.platforms_changed,
                    "rebuild": c.rebuild,
                }
                for c in self.changed
            ],
            "tags_added": [f"{r}:{t}" for r, t in self.tags_added],
            "tags_removed": [f"{r}:{t}" for r, t in self.tags_removed],
            "tags_changed": [f"{r}:{t}" for r, t in self.tags_changed],
            "errors": [str(e) for e in self.errors],
        }


def _inputs_by_arch(group: TagGroup) -> dict[str, list[tuple[str, ...]]]:
    by_arch: dict[str, list[tuple[str, ...]]] = {}
    for arch, *inputs in group.build_key:
        by_arch.setdefault(arch, []).append(tuple(inputs))
    return {a: sorted(v) for a, v in by_arch.items()}


def _same(a: TagGroup, b: TagGroup) -> bool:
    return set(a.tags) == set(b.tags) and set(a.platforms) == set(b.platforms) and a.build_key == b.build_key


def diff_repository(old: Repository | None, new: Repository | None, into: LibraryDiff) -> None:
    """Add the differences between two versions of one repository (None: absent) to *into*."""
    old_groups = old.tag_groups() if old else ()
    new_groups = new.tag_groups() if new else ()
    either = new or old
    name = either.name if either is not None else ""
    old_by_tag = {t: g for g in old_groups for t in g.tags}
    new_by_tag = {t: g for g in new_groups for t in g.tags}
    matched_old: set[int] = set()
    for g in new_groups:
        overlap: dict[int, int] = {}
        for t in g.tags:
            if t in old_by_tag:
                overlap[id(old_by_tag[t])] = overlap.get(id(old_by_tag[t]), 0) + 1
        if not overlap:
            into.added.append(g)
            continue
        best = max(overlap, key=lambda k: overlap[k])
        prev = next(o for o in old_groups if id(o) == best)
        matched_old.update(overlap)
        if not _same(prev, g):
            into.changed.append(GroupChange(prev, g))
    into.removed.extend(o for o in old_groups if id(o) not in matched_old)
    into.tags_added.extend((name, t) for t in new_by_tag if t not in old_by_tag)
    into.tags_removed.extend((name, t) for t in old_by_tag if t not in new_by_tag)
    for t, g in new_by_tag.items():
        o = old_by_tag.get(t)
        if o is not None and (set(o.platforms) != set(g.platforms) or o.build_key != g.build_key):
            into.tags_changed.append((name, t))


def diff_parsed(
    old_commit: str,
    new_commit: str,
    old: dict[str, Repository | LibraryError | None],
    new: dict[str, Repository | LibraryError | None],
) -> LibraryDiff:
    """Diff two mappings ``name → parsed file`` (None or missing: the file does not exist)."""
    diff = LibraryDiff(old_commit, new_commit)
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name), new.get(name)
        errs = [x for x in (a, b) if isinstance(x, LibraryError)]
        if errs:
            diff.errors.extend(errs)
            continue
        assert not isinstance(a, LibraryError) and not isinstance(b, LibraryError)
        if a is None and b is None:
            continue
        if a is None:
            diff.repositories_added.append(name)
        elif b is None:
            diff.repositories_removed.append(name)
        else:
            diff.repositories_changed.append(name)
        diff_repository(a, b, diff)
    return diff


async def diff_library(
    source: LibrarySource, old: str, new: str | None = None, *, cache: ParseCache | None = None
) -> LibraryDiff:
    """Diff the library between *old* and *new* (default: the source's default branch tip)."""
    cache = cache if cache is not None else ParseCache()
    a, b = await source.resolve(old), await source.resolve(new)
    changes = [c for c in await source.changed_files(a, b) if is_image_file(c.name)]
    objects = [f"{a}:library/{c.name}" for c in changes if c.status != "A"]
    objects += [f"{b}:library/{c.name}" for c in changes if c.status != "D"]
    ids = await source.object_ids(objects)
    sides: tuple[dict[str, Repository | LibraryError | None], dict[str, Repository | LibraryError | None]] = ({}, {})
    for commit, side in ((a, sides[0]), (b, sides[1])):
        files = [
            TreeFile(c.name, ids[f"{commit}:library/{c.name}"])
            for c in changes
            if ids.get(f"{commit}:library/{c.name}")
        ]
        side.update(await cache.parse_files(source, files))
        for c in changes:
            side.setdefault(c.name, None)
    return diff_parsed(a, b, sides[0], sides[1])
