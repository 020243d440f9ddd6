"""Parse official-images library files exactly as bashbrew does (RFC 2822-like, plus legacy line-based)."""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field, replace

from .._errors import LibraryError
from ._model import ARCH_FIELDS, ARCHITECTURES, Entry, ParseWarning, Repository

# Go's unicode.IsSpace set (strings.TrimSpace); Python's str.strip() would also eat \x1c-\x1f.
_WS = "\t\n\v\f\r \x85\xa0\u1680" + "".join(chr(c) for c in range(0x2000, 0x200B)) + "\u2028\u2029\u202f\u205f\u3000"
_LIST_STRIP = "\n\r\t "

_GO_S = r"[\t\n\f\r ]"
_MAINTAINER_RE = re.compile(
    r"([^\t\n\f\r <>()][^<>()]*)(?:" + _GO_S + r"+<([^\t\n\f\r <>()]+)>)?" + _GO_S + r"+[(]@([^\t\n\f\r <>()]+)[)]"
)
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_GIT_FETCH_RE = re.compile(r"refs/(heads|tags)/[^*?:]+")
_GIT_COMMIT_RE = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
#: Docker repository-name grammar for one path component (a library file name).
REPO_NAME_RE = re.compile(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*")

_LIST_FIELDS = ("Maintainers", "Tags", "SharedTags", "Architectures", "Constraints")
_STRING_FIELDS = ("GitRepo", "GitFetch", "GitCommit", "Directory", "File", "Builder")
_KNOWN = frozenset(_LIST_FIELDS + _STRING_FIELDS)
_ARCH_SUFFIXES = tuple("-" + f for f in ARCH_FIELDS)

DEFAULT_GIT_FETCH = "refs/heads/master"
LEGACY_GIT_FETCH = "refs/heads/*"


@dataclass
class _Paragraph:
    """One paragraph: field values (last duplicate wins), the line of each field, and its first line."""

    line: int
    values: dict[str, str] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)


@dataclass
class _Draft:
    """A mutable entry while it is being decoded, validated and possibly merged."""

    tags: list[str] = field(default_factory=list)
    shared_tags: list[str] = field(default_factory=list)
    architectures: list[str] = field(default_factory=lambda: ["amd64"])
    git_repo: str = ""
    git_fetch: str = DEFAULT_GIT_FETCH
    git_commit: str = ""
    directory: str = "."
    file: str = "Dockerfile"
    builder: str = ""
    constraints: list[str] = field(default_factory=list)
    maintainers: list[str] = field(default_factory=list)
    arch_values: dict[str, str] = field(default_factory=dict)
    line: int = 0
    lines: dict[str, int] = field(default_factory=dict)

    def clone(self) -> _Draft:
        return replace(
            self,
            tags=list(self.tags),
            shared_tags=list(self.shared_tags),
            architectures=list(self.architectures),
            constraints=list(self.constraints),
            maintainers=list(self.maintainers),
            arch_values=dict(self.arch_values),
            lines={},
        )

    def at(self, name: str) -> int:
        """The line of field *name* in this entry's paragraph, else the paragraph's first line."""
        return self.lines.get(name, self.line)

    def same_build_artifacts(self, other: _Draft) -> bool:
        keys = set(self.arch_values) | set(other.arch_values)
        if any(self.arch_values.get(k, "") != other.arch_values.get(k, "") for k in keys):
            return False
        return (
            self.architectures == other.architectures
            and self.git_repo == other.git_repo
            and self.git_fetch == other.git_fetch
            and self.git_commit == other.git_commit
            and self.directory == other.directory
            and self.file == other.file
            and self.builder == other.builder
            and self.constraints == other.constraints
        )

    def freeze(self, source_file: str) -> Entry:
        return Entry(
            tags=tuple(self.tags),
            shared_tags=tuple(self.shared_tags),
            architectures=tuple(self.architectures),
            git_repo=self.git_repo,
            git_fetch=self.git_fetch,
            git_commit=self.git_commit,
            directory=self.directory,
            file=self.file,
            builder=self.builder,
            constraints=tuple(self.constraints),
            maintainers=tuple(self.maintainers),
            arch_values=tuple(sorted(self.arch_values.items())),
            source_file=source_file,
            line=self.line,
        )


def _split_list(value: str) -> list[str]:
    return [item.strip(_LIST_STRIP) for item in value.strip(_LIST_STRIP).split(",")]


def _lines(text: str) -> list[str]:
    """Lines without their ``\\n`` (a final line without newline is kept, as Go's reader does)."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _paragraphs(text: str, file: str) -> list[_Paragraph]:
    """Comment stripper + go-debian ParagraphReader. Line numbers are 1-based in the original text."""
    paragraphs: list[_Paragraph] = []
    current: _Paragraph | None = None
    last_key: str | None = None
    for number, line in enumerate(_lines(text), start=1):
        if line.lstrip(_WS).startswith("#"):
            continue  # comments vanish entirely: they never split a paragraph
        if line in ("", "\r"):
            if current is not None and current.values:
                paragraphs.append(current)
                current, last_key = None, None
            continue
        if current is None:
            current = _Paragraph(line=number)
        if line[0] in " \t":
            cont = line[1:].rstrip(_WS)
            if cont == ".":
                cont = ""
            if last_key is not None:  # before any field: stored under "" by go-debian and ignored
                current.values[last_key] += "\n" + cont
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise LibraryError(f"Bad line: {line!r} has no ':'", file=file, line=number)
        key, value = key.strip(_WS), value.strip(_WS)
        if not current.values:
            current.line = number
        current.values[key] = value
        current.lines[key] = number
        last_key = key
    if current is not None and current.values:
        paragraphs.append(current)
    return paragraphs


def _decode(draft: _Draft, para: _Paragraph, file: str, warnings: list[ParseWarning]) -> None:
    """go-debian decode + bashbrew decoderWrapper: lists append, SharedTags/Architectures replace."""
    inherited_shared, inherited_arches = draft.shared_tags, draft.architectures
    draft.shared_tags, draft.architectures = [], []
    draft.line, draft.lines = para.line, dict(para.lines)
    v = para.values
    for name, value in v.items():
        if name in _KNOWN:
            continue
        if name.endswith(_ARCH_SUFFIXES):
            draft.arch_values[name] = value
        else:
            warnings.append(ParseWarning(file, para.lines[name], f"unknown field {name!r} ignored"))
    if "Maintainers" in v:
        draft.maintainers += _split_list(v["Maintainers"])
    if "Tags" in v:
        draft.tags += _split_list(v["Tags"])
    if "SharedTags" in v:
        draft.shared_tags = _split_list(v["SharedTags"])
    if "Architectures" in v:
        draft.architectures = _split_list(v["Architectures"])
    if "Constraints" in v:
        draft.constraints += _split_list(v["Constraints"])
    if "GitRepo" in v:
        draft.git_repo = v["GitRepo"]
    if "GitFetch" in v:
        draft.git_fetch = v["GitFetch"]
    if "GitCommit" in v:
        draft.git_commit = v["GitCommit"]
    if "Directory" in v:
        draft.directory = v["Directory"]
    if "File" in v:
        draft.file = v["File"]
    if "Builder" in v:
        draft.builder = v["Builder"]
    if not draft.shared_tags:
        draft.shared_tags = inherited_shared
    if not draft.architectures:
        draft.architectures = inherited_arches
    draft.shared_tags = list(dict.fromkeys(draft.shared_tags))
    draft.architectures = sorted(set(draft.architectures))
    draft.directory = _clean(draft.directory)
    for key in draft.arch_values:
        if key.endswith("-Directory"):
            draft.arch_values[key] = _clean(draft.arch_values[key])


def _clean(path: str) -> str:
    """Go's path.Clean."""
    return posixpath.normpath(path).replace("//", "/") if path else "."


def _tags_string(d: _Draft) -> str:
    return ", ".join(d.tags)


def _check_global(g: _Draft, file: str) -> None:
    if not g.maintainers:
        raise LibraryError("missing Maintainers in the global paragraph", file=file, line=g.line)
    bad = [m for m in g.maintainers if not _MAINTAINER_RE.fullmatch(m)]
    if bad:
        raise LibraryError(
            f"invalid Maintainers: {bad!r} (expected 'Full Name <contact-email-or-url> (@github-handle)' "
            "or 'Full Name (@github-handle)')",
            file=file,
            line=g.at("Maintainers"),
        )
    if g.tags:
        raise LibraryError("global Tags not permitted", file=file, line=g.at("Tags"))
    bad = [a for a in g.architectures if a not in ARCHITECTURES]
    if bad:
        raise LibraryError(f"invalid global Architectures: {bad!r}", file=file, line=g.at("Architectures"))


def _check_entry(d: _Draft, file: str, *, check_refs: bool = True) -> None:
    ts = _tags_string(d)
    if check_refs and not _GIT_FETCH_RE.fullmatch(d.git_fetch):
        raise LibraryError(
            f"Tags {ts!r} has invalid GitFetch (must be 'refs/heads/...' or 'refs/tags/...'): {d.git_fetch!r}",
            file=file,
            line=d.at("GitFetch"),
        )
    if check_refs and not _GIT_COMMIT_RE.fullmatch(d.git_commit):
        raise LibraryError(
            f"Tags {ts!r} has invalid GitCommit (must be a full commit id): {d.git_commit!r}",
            file=file,
            line=d.at("GitCommit"),
        )
    if not d.tags:
        raise LibraryError("missing Tags", file=file, line=d.line)
    if not (d.git_repo and d.git_fetch and d.git_commit):
        raise LibraryError(f"Tags {ts!r} missing one of GitRepo, GitFetch, or GitCommit", file=file, line=d.line)
    bad = [t for t in d.tags + d.shared_tags if not _TAG_RE.fullmatch(t)]
    if bad:
        where = "Tags" if any(t in d.tags for t in bad) else "SharedTags"
        raise LibraryError(f"Tags {ts!r} has invalid (Shared)Tags: {bad!r}", file=file, line=d.at(where))
    bad = [a for a in d.architectures if a not in ARCHITECTURES]
    if bad:
        raise LibraryError(f"Tags {ts!r} has invalid Architectures: {bad!r}", file=file, line=d.at("Architectures"))


def _add_entry(entries: list[_Draft], d: _Draft, file: str) -> bool:
    """bashbrew AddEntry: uniqueness checks, then merge into an entry with identical artifacts.

    Returns True when *d* was merged into an earlier entry.
    """
    _check_entry(d, file, check_refs=False)
    ts = _tags_string(d)
    seen: set[str] = set()
    for tag in d.tags:
        for other in entries:
            if tag in other.tags:
                raise LibraryError(
                    f"Tags {ts!r} includes duplicate tag: {tag!r} (duplicated in {_tags_string(other)!r})",
                    file=file,
                    line=d.at("Tags"),
                )
            if tag in other.shared_tags:
                raise LibraryError(
                    f"Tags {ts!r} includes tag conflicting with a shared tag: {tag!r} "
                    f"(shared tag in {_tags_string(other)!r})",
                    file=file,
                    line=d.at("Tags"),
                )
        if tag in seen:
            raise LibraryError(f"Tags {ts!r} includes duplicate tag: {tag!r}", file=file, line=d.at("Tags"))
        seen.add(tag)
    for tag in d.shared_tags:
        for other in entries:
            if tag in other.tags:
                raise LibraryError(
                    f"Tags {ts!r} includes conflicting shared tag: {tag!r} (duplicated in {_tags_string(other)!r})",
                    file=file,
                    line=d.at("SharedTags"),
                )
        if tag in seen:
            raise LibraryError(
                f"Tags {ts!r} includes duplicate tag: {tag!r} (in SharedTags)", file=file, line=d.at("SharedTags")
            )
        seen.add(tag)
    for existing in entries:
        if existing.same_build_artifacts(d):
            existing.tags += d.tags
            existing.shared_tags = list(dict.fromkeys(existing.shared_tags + d.shared_tags))
            return True
    entries.append(d)
    return False


def parse_2822(text: str, name: str, *, file: str | None = None) -> Repository:
    """Parse an RFC 2822-like library file (bashbrew ``Parse2822``); raise `LibraryError` naming file:line."""
    file = file or f"library/{name}"
    warnings: list[ParseWarning] = []
    paragraphs = _paragraphs(text, file)
    if not paragraphs:
        raise LibraryError("empty library file (missing Maintainers)", file=file, line=1)
    glob = _Draft()
    _decode(glob, paragraphs[0], file, warnings)
    _check_global(glob, file)
    entries: list[_Draft] = []
    merged = 0
    for para in paragraphs[1:]:
        d = glob.clone()
        _decode(d, para, file, warnings)
        _check_entry(d, file)
        merged += _add_entry(entries, d, file)
    return Repository(
        name=name,
        entries=tuple(e.freeze(file) for e in entries),
        maintainers=tuple(glob.maintainers),
        file=file,
        legacy=False,
        warnings=tuple(warnings),
        merged=merged,
    )


def parse_line_based(text: str, name: str, *, file: str | None = None) -> Repository:
    """Parse the legacy line-based format (``tag: url@commit [dir]``, bashbrew ``ParseLineBased``)."""
    file = file or f"library/{name}"
    glob = _Draft(git_fetch=LEGACY_GIT_FETCH, line=1)
    entries: list[_Draft] = []
    merged = 0
    maintainer_line = 0
    for number, raw in enumerate(_lines(text), start=1):
        line = raw.strip(_WS)
        if not line:
            continue
        if line[0] == "#":
            if line.startswith("# maintainer: "):
                glob.maintainers.append(line[len("# maintainer: ") :])
                maintainer_line = maintainer_line or number
            continue
        tag, sep, rest = line.partition(":")
        if not sep:
            raise LibraryError(f"manifest line missing ':': {line!r}", file=file, line=number)
        repo, sep, rest = rest.strip(_WS).partition("@")
        if not sep:
            raise LibraryError(f"manifest line missing '@': {line!r}", file=file, line=number)
        d = glob.clone()
        d.line = number
        d.tags = [tag.strip(_WS)]
        d.git_repo = repo.strip(_WS)
        commit, _, directory = rest.partition(" ")
        d.git_commit = commit.strip(_WS)
        if directory.strip(_WS):
            d.directory = _clean(directory.strip(_WS))
        if d.git_fetch == LEGACY_GIT_FETCH and not _GIT_COMMIT_RE.fullmatch(d.git_commit):
            d.git_fetch, d.git_commit = "refs/tags/" + d.git_commit, "FETCH_HEAD"
        merged += _add_entry(entries, d, file)
    if not glob.maintainers:
        raise LibraryError("missing Maintainers ('# maintainer: …' lines)", file=file, line=1)
    bad = [m for m in glob.maintainers if not _MAINTAINER_RE.fullmatch(m)]
    if bad:
        raise LibraryError(f"invalid Maintainers: {bad!r}", file=file, line=maintainer_line)
    return Repository(
        name=name,
        entries=tuple(e.freeze(file) for e in entries),
        maintainers=tuple(glob.maintainers),
        file=file,
        legacy=True,
        merged=merged,
    )


def parse_library_file(data: str | bytes, name: str, *, file: str | None = None) -> Repository:
    """Parse one library file as bashbrew ``manifest.Parse`` did: RFC 2822, else the legacy line format.

    When both fail, the RFC 2822 error is raised (it is the format every current file uses).
    """
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
    try:
        return parse_2822(text, name, file=file)
    except LibraryError as err:
        try:
            return parse_line_based(text, name, file=file)
        except LibraryError:
            raise err from None


def is_image_file(name: str) -> bool:
    """True for a library file name that is a Docker repository name (``MAINTAINERS`` is not)."""
    return REPO_NAME_RE.fullmatch(name) is not None
