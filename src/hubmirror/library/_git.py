"""Read official-images history through the git CLI: open a source, resolve revs, read ``library/`` blobs."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import shutil
import signal
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .._defaults import DEFAULT_LIBRARY
from .._errors import LibraryError

DEFAULT_SOURCE = DEFAULT_LIBRARY
_SCP_LIKE = re.compile(r"^[\w.-]+@[\w.-]+:")
_BRANCHES = "+refs/heads/*:refs/heads/*"


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/hubmirror`` (default ``~/.cache/hubmirror``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hubmirror"


@dataclass(frozen=True)
class TreeFile:
    """One file of ``library/`` at a commit: its name (``golang``) and blob id."""

    name: str
    blob: str


@dataclass(frozen=True)
class FileChange:
    """One line of ``git diff --name-status`` under ``library/``: status A, M or D, and the file name."""

    status: str
    name: str


async def _git(git_dir: Path | None, *args: str, stdin: bytes | None = None) -> tuple[int, bytes, bytes]:
    """Run ``git [--git-dir DIR] ARGS…``: (exit status, stdout, stderr).

    git runs in its own process group; if the caller is cancelled (or anything else interrupts the wait),
    the whole group — git and the helpers it started (``git-remote-https``, ``index-pack``) — is killed
    and reaped before the exception goes on, so a stopped run leaves no git behind while the loop lives on.
    """
    cmd = ["git"]
    if git_dir is not None:
        cmd += ["--git-dir", str(git_dir)]
    cmd += list(args)
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    try:
        out, err = await proc.communicate(stdin)
    except BaseException:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(BaseException):
            await asyncio.shield(proc.wait())
        raise
    assert proc.returncode is not None
    return proc.returncode, out, err


async def run_git(git_dir: Path | None, *args: str, stdin: bytes | None = None, what: str = "") -> bytes:
    """Run ``git [--git-dir DIR] ARGS…`` and return stdout; raise `LibraryError` with git's message."""
    code, out, err = await _git(git_dir, *args, stdin=stdin)
    if code != 0:
        message = err.decode("utf-8", "replace").strip().splitlines()
        detail = message[-1] if message else f"exit status {code}"
        raise LibraryError(f"{what or 'git ' + args[0]} failed: {detail}")
    return out


def _is_url(spec: str) -> bool:
    return "://" in spec or bool(_SCP_LIKE.match(spec))


def _is_bundle(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            head = f.read(16)
    except OSError:
        return False
    return head.startswith(b"# v2 git bundle") or head.startswith(b"# v3 git bundle")


def _classify(spec: str) -> tuple[str, Path]:
    """("url" | "bundle" | "path", path) for a source spec; raise when a path does not fit."""
    if _is_url(spec):
        return "url", Path()
    path = Path(spec).expanduser()
    if path.is_file():
        if not _is_bundle(path):
            raise LibraryError(f"{spec}: not a git bundle")
        return "bundle", path.resolve()
    if not path.exists():
        raise LibraryError(f"{spec}: no such file or directory (expected a git URL, clone or bundle)")
    return "path", path


def _prepare(target: Path) -> bool:
    """True if the cache repository *target* exists; else create its parent directory and return False."""
    if (target / "HEAD").exists():
        return True
    target.parent.mkdir(parents=True, exist_ok=True)
    return False


def _cache_name(key: str) -> str:
    tail = re.sub(r"[^A-Za-z0-9._-]+", "-", key.rstrip("/").rsplit("/", 1)[-1])[:40]
    return f"{tail}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.git"


class LibrarySource:
    """A git repository holding official-images history, read without any checkout.

    Create with `LibrarySource.open`. ``default_rev`` is what ``None`` revs resolve to.
    """

    def __init__(self, git_dir: Path, *, default_rev: str = "HEAD", spec: str = "") -> None:
        self.git_dir = git_dir
        self.default_rev = default_rev
        self.spec = spec or str(git_dir)

    def __repr__(self) -> str:
        return f"LibrarySource({self.spec!r})"

    @classmethod
    async def open(cls, spec: str, cache_dir: Path | None = None, *, update: bool = True) -> LibrarySource:
        """Open *spec*: a git URL (bare clone into the cache, fetched on later runs when *update*), a local
        clone (used in place) or a bundle file (cloned/fetched into the cache)."""
        cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        kind, path = _classify(spec)
        if kind == "bundle":
            return await cls._from_bundle(path, cache / "sources", update=update)
        if kind == "path":
            out = await run_git(
                None, "-C", str(path), "rev-parse", "--absolute-git-dir", what=f"opening {spec} as a git repository"
            )
            return cls(Path(out.decode().strip()), spec=spec)
        target = cache / "sources" / _cache_name(spec)
        if not _prepare(target):
            tmp = target.with_name(target.name + f".tmp{os.getpid()}")
            try:
                await run_git(None, "clone", "--bare", "--quiet", spec, str(tmp), what=f"cloning {spec}")
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)  # our own half-made clone, never the cache
                raise
            tmp.rename(target)
        elif update:
            await run_git(target, "fetch", "--quiet", "--prune", spec, _BRANCHES, what=f"fetching {spec}")
        return cls(target, spec=spec)

    @classmethod
    async def _from_bundle(cls, bundle: Path, sources: Path, *, update: bool) -> LibrarySource:
        heads_out = await run_git(None, "bundle", "list-heads", str(bundle), what=f"reading bundle {bundle}")
        heads = [line.split(" ", 1) for line in heads_out.decode().splitlines() if " " in line]
        refs = {ref: oid for oid, ref in heads}
        branches = [ref for ref in refs if ref.startswith("refs/heads/")]
        if "HEAD" in refs:
            default = refs["HEAD"]
        elif len(branches) == 1:
            default = branches[0]
        else:
            raise LibraryError(f"{bundle}: bundle has no HEAD and {len(branches)} branches; pass a rev explicitly")
        target = sources / _cache_name(str(bundle))
        if not _prepare(target):
            tmp = target.with_name(target.name + f".tmp{os.getpid()}")
            await run_git(None, "init", "--bare", "--quiet", str(tmp), what="creating the cache repository")
            await run_git(tmp, "fetch", "--quiet", str(bundle), _BRANCHES, what=f"reading bundle {bundle}")
            tmp.rename(target)
        elif update:
            await run_git(
                target, "fetch", "--quiet", "--prune", str(bundle), _BRANCHES, what=f"reading bundle {bundle}"
            )
        return cls(target, default_rev=default, spec=str(bundle))

    async def resolve(self, rev: str | None = None) -> str:
        """The full commit id of *rev* (default: the source's default branch tip)."""
        name = rev or self.default_rev
        try:
            out = await run_git(
                self.git_dir, "rev-parse", "--verify", "--quiet", "--end-of-options", name + "^{commit}"
            )
        except LibraryError:
            raise LibraryError(f"unknown revision {name!r} in {self.spec}") from None
        return out.decode().strip()

    async def list_files(self, commit: str) -> list[TreeFile]:
        """Every blob directly under ``library/`` at *commit* (``git ls-tree``)."""
        out = await run_git(
            self.git_dir, "ls-tree", "-z", commit, "--", "library/", what=f"listing library/ at {commit}"
        )
        files: list[TreeFile] = []
        for rec in out.split(b"\0"):
            if not rec:
                continue
            meta, _, path = rec.partition(b"\t")
            _mode, kind, oid = meta.decode().split(" ")
            if kind == "blob":
                files.append(TreeFile(path.decode("utf-8", "replace").removeprefix("library/"), oid))
        return files

    async def read_blobs(self, objects: Iterable[str]) -> dict[str, bytes | None]:
        """Contents of many objects (ids or ``rev:path``) from one ``git cat-file --batch``; None if missing."""
        wanted = list(dict.fromkeys(objects))
        if not wanted:
            return {}
        out = await run_git(self.git_dir, "cat-file", "--batch", stdin=("\n".join(wanted) + "\n").encode())
        result: dict[str, bytes | None] = {}
        pos = 0
        for obj in wanted:
            nl = out.index(b"\n", pos)
            header = out[pos:nl].decode()
            pos = nl + 1
            if header.endswith(" missing") or header.endswith(" ambiguous"):
                result[obj] = None
                continue
            size = int(header.rsplit(" ", 1)[1])
            result[obj] = out[pos : pos + size]
            pos += size + 1
        return result

    async def object_ids(self, objects: Iterable[str]) -> dict[str, str]:
        """Object ids of many ``rev:path`` names (one ``git cat-file --batch-check``); missing ones left out."""
        wanted = list(dict.fromkeys(objects))
        if not wanted:
            return {}
        out = await run_git(self.git_dir, "cat-file", "--batch-check", stdin=("\n".join(wanted) + "\n").encode())
        ids: dict[str, str] = {}
        for obj, line in zip(wanted, out.decode().splitlines(), strict=True):
            if not line.endswith(" missing"):
                ids[obj] = line.split(" ", 1)[0]
        return ids

    async def is_ancestor(self, old: str, new: str) -> bool:
        """True if *old* is an ancestor of (or equal to) *new*."""
        a, b = await self.resolve(old), await self.resolve(new)
        code, _, err = await _git(self.git_dir, "merge-base", "--is-ancestor", a, b)
        if code not in (0, 1):
            raise LibraryError(f"git merge-base failed: {err.decode('utf-8', 'replace').strip()}")
        return code == 0

    async def first_parent_commits(self, old: str | None, new: str | None = None) -> list[str]:
        """First-parent commits after *old* up to *new* inclusive, oldest first (all of them if *old* is None)."""
        head = await self.resolve(new)
        spec = [head] if old is None else [f"{await self.resolve(old)}..{head}"]
        out = await run_git(self.git_dir, "rev-list", "--first-parent", "--reverse", *spec, "--")
        return out.decode().split()

    async def changed_files(self, old: str, new: str) -> list[FileChange]:
        """Files under ``library/`` that differ between two commits (``git diff --name-status``)."""
        out = await run_git(
            self.git_dir, "diff", "--name-status", "--no-renames", "-z", old, new, "--", "library/", what="git diff"
        )
        parts = [p.decode("utf-8", "replace") for p in out.split(b"\0") if p]
        changes: list[FileChange] = []
        for status, path in zip(parts[0::2], parts[1::2], strict=False):
            name = path.removeprefix("library/")
            if "/" not in name:
                changes.append(FileChange(status[0], name))
        return changes
