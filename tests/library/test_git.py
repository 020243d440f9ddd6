"""LibrarySource, load_library and diff_library against small real git repositories (clone, URL, bundle)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from libtest_helpers import LibRepo, git

from hubmirror import LibraryError
from hubmirror.library import LibrarySource, ParseCache, diff_library, load_library
from hubmirror.platform import Platform

C1, C2, C3 = "1" * 40, "2" * 40, "3" * 40
GOLANG = """Maintainers: Go Team (@go)
GitRepo: https://github.com/docker-library/golang.git

Tags: 1.22.1-bookworm, 1.22-bookworm, bookworm
SharedTags: 1.22.1, 1.22, latest
Architectures: amd64, arm64v8
GitCommit: {commit}
Directory: 1.22/bookworm

Tags: 1.22.1-windowsservercore, 1.22-windowsservercore
SharedTags: 1.22.1, 1.22, latest
Architectures: windows-amd64
GitCommit: {commit}
Directory: 1.22/windows/windowsservercore
"""
PYTHON = f"""Maintainers: Py Team (@py)
GitRepo: https://github.com/docker-library/python.git

Tags: 3.12.2, 3.12, 3, latest
Architectures: amd64, arm32v7, s390x
GitCommit: {C1}
"""
ROCKET = f"""Maintainers: Rocket (@rocket)
GitRepo: https://github.com/RocketChat/Docker.Official.Image.git

Tags: 6.6.0, 6.6, 6, latest
GitCommit: {C3}
"""
BROKEN = f"""Maintainers: Broken (@broken)
GitRepo: https://github.com/x/broken.git

Tags: 1.0
GitCommit: not-a-commit
Directory: {C1}
"""


@pytest.fixture
def history3(make_lib_repo: Callable[[str], LibRepo]) -> tuple[LibRepo, list[str]]:
    """Three commits: initial; golang GitCommit-only bump; rocket.chat added, python removed, extras."""
    repo = make_lib_repo("oi")
    c1 = repo.commit({"golang": GOLANG.format(commit=C1), "python": PYTHON}, "initial")
    c2 = repo.commit({"golang": GOLANG.format(commit=C2)}, "Update golang")
    c3 = repo.commit({"rocket.chat": ROCKET, "python": None, "MAINTAINERS": "old file\n", "broken": BROKEN}, "more")
    return repo, [c1, c2, c3]


async def test_load_library_from_a_local_clone(history3: tuple[LibRepo, list[str]], tmp_path: Path) -> None:
    repo, (c1, _c2, c3) = history3
    src = await LibrarySource.open(str(repo.path), tmp_path / "cache")
    lib = await load_library(src)  # default: HEAD
    assert lib.commit == c3
    assert sorted(lib.repositories) == ["golang", "rocket.chat"]
    assert lib.skipped == ("MAINTAINERS",)
    assert lib.files == 4
    # one bad file is reported with file and line, and does not stop the others
    (err,) = lib.errors
    assert (err.file, err.line) == ("library/broken", 5) and "invalid GitCommit" in str(err)

    old = await load_library(src, c1)
    stats = old.stats()
    assert (stats.files, stats.entries, stats.tags, stats.shared_tags) == (2, 3, 12, 3)
    assert (stats.platform_images, stats.windows_entries, stats.errors) == (6, 1, 0)
    latest = next(g for g in old.tag_groups() if g.repo == "golang" and "latest" in g.tags)
    assert latest.shared and latest.windows and latest.tags == ("1.22.1", "1.22", "latest")
    assert latest.platforms == (
        Platform("linux", "amd64"),
        Platform("linux", "arm64", "v8"),
        Platform("windows", "amd64"),
    )


async def test_unknown_revision_names_the_rev(history3: tuple[LibRepo, list[str]], tmp_path: Path) -> None:
    repo, _ = history3
    src = await LibrarySource.open(str(repo.path), tmp_path / "cache")
    with pytest.raises(LibraryError, match="unknown revision 'no-such-branch'"):
        await load_library(src, "no-such-branch")
    with pytest.raises(LibraryError, match="no such file"):
        await LibrarySource.open(str(tmp_path / "missing"), tmp_path / "cache")


async def test_diff_gitcommit_only_added_and_removed(history3: tuple[LibRepo, list[str]], tmp_path: Path) -> None:
    repo, (c1, c2, c3) = history3
    src = await LibrarySource.open(str(repo.path), tmp_path / "cache")

    bump = await diff_library(src, c1, c2)
    assert not bump.added and not bump.removed and not bump.tags_added and not bump.tags_removed
    assert bump.repositories_changed == ["golang"]
    assert len(bump.changed) == 3  # two entries + the shared group
    assert all(c.rebuild and not c.tags_changed and not c.platforms_changed for c in bump.changed)
    assert sorted(t for _, t in bump.tags_changed) == sorted(
        [
            *("1.22.1-bookworm", "1.22-bookworm", "bookworm"),
            *("1.22.1-windowsservercore", "1.22-windowsservercore"),
            *("1.22.1", "1.22", "latest"),
        ]
    )

    more = await diff_library(src, c2, c3)
    assert more.repositories_added == ["rocket.chat"] and more.repositories_removed == ["python"]
    assert [g.tags for g in more.added] == [("6.6.0", "6.6", "6", "latest")]
    assert [g.tags for g in more.removed] == [("3.12.2", "3.12", "3", "latest")]
    assert ("python", "latest") in more.tags_removed and ("rocket.chat", "latest") in more.tags_added
    assert [str(e) for e in more.errors] == [
        "library/broken:5: Tags '1.0' has invalid GitCommit (must be a full commit id): 'not-a-commit'"
    ]
    assert not (await diff_library(src, c3, c3)).as_dict()["changed"]


async def test_diff_reports_tag_renames_and_platform_changes(
    make_lib_repo: Callable[[str], LibRepo], tmp_path: Path
) -> None:
    repo = make_lib_repo("oi")
    a = repo.commit({"python": PYTHON})
    b = repo.commit({"python": PYTHON.replace("3.12.2", "3.12.3").replace("arm32v7, ", "")})
    src = await LibrarySource.open(str(repo.path), tmp_path / "cache")
    d = await diff_library(src, a, b)
    (change,) = d.changed
    assert change.tags_changed and change.platforms_changed and not change.rebuild
    assert change.tags_added == ("3.12.3",) and change.tags_removed == ("3.12.2",)
    assert d.tags_added == [("python", "3.12.3")] and d.tags_removed == [("python", "3.12.2")]
    assert set(d.tags_changed) == {("python", "3.12"), ("python", "3"), ("python", "latest")}


async def test_history_helpers(history3: tuple[LibRepo, list[str]], tmp_path: Path) -> None:
    repo, (c1, c2, c3) = history3
    git(repo.path, "checkout", "-q", "-b", "side", c1)
    side = repo.commit({"nim": PYTHON.replace("@py", "@nim")}, "side work")
    git(repo.path, "checkout", "-q", "main")
    git(repo.path, "merge", "-q", "--no-ff", "-m", "merge side", "side")
    merge = git(repo.path, "rev-parse", "HEAD")
    src = await LibrarySource.open(str(repo.path), tmp_path / "cache")
    assert await src.first_parent_commits(None) == [c1, c2, c3, merge]
    assert await src.first_parent_commits(c1, merge) == [c2, c3, merge]  # the side commit is not first-parent
    assert await src.is_ancestor(c1, c3) and await src.is_ancestor(side, merge)
    assert not await src.is_ancestor(c3, c1) and not await src.is_ancestor(side, c3)
    changes = await src.changed_files(c2, c3)
    assert {(c.status, c.name) for c in changes} == {
        ("A", "rocket.chat"),
        ("A", "broken"),
        ("A", "MAINTAINERS"),
        ("D", "python"),
    }


async def test_parse_cache_reuses_unchanged_blobs(history3: tuple[LibRepo, list[str]], tmp_path: Path) -> None:
    repo, (c1, c2, c3) = history3
    src = await LibrarySource.open(str(repo.path), tmp_path / "cache")
    cache = ParseCache()
    for c in (c1, c2, c3):
        await load_library(src, c, cache=cache)
    # python@c1, golang@c1, golang@c2, rocket.chat, broken: five distinct blobs, each parsed once
    assert len(cache) == 5
    again = await load_library(src, c2, cache=cache)
    assert again.repositories["golang"] is cache.get(
        next(f.blob for f in await src.list_files(c2) if f.name == "golang"), "golang"
    )


async def test_url_source_is_cloned_then_fetched(make_lib_repo: Callable[[str], LibRepo], tmp_path: Path) -> None:
    repo = make_lib_repo("upstream")
    first = repo.commit({"python": PYTHON})
    url = repo.path.as_uri()
    cache = tmp_path / "cache"
    src = await LibrarySource.open(url, cache)
    assert src.git_dir.parent == cache / "sources" and (src.git_dir / "HEAD").is_file()
    assert await src.resolve() == first
    second = repo.commit({"rocket.chat": ROCKET})
    again = await LibrarySource.open(url, cache)
    assert again.git_dir == src.git_dir
    lib = await load_library(again)
    assert lib.commit == second and sorted(lib.repositories) == ["python", "rocket.chat"]
    stale = await LibrarySource.open(url, cache, update=False)
    assert await stale.resolve() == second  # the cache keeps what the last fetch brought


async def test_bundle_source(make_lib_repo: Callable[[str], LibRepo], tmp_path: Path) -> None:
    repo = make_lib_repo("upstream")
    c1 = repo.commit({"python": PYTHON})
    only_branch = tmp_path / "main.bundle"
    git(repo.path, "bundle", "create", "-q", str(only_branch), "main")
    src = await LibrarySource.open(str(only_branch), tmp_path / "cache")
    assert src.default_rev == "refs/heads/main" and await src.resolve() == c1

    c2 = repo.commit({"rocket.chat": ROCKET})
    git(repo.path, "branch", "-q", "other", c1)
    with_head = tmp_path / "head.bundle"
    git(repo.path, "bundle", "create", "-q", str(with_head), "HEAD", "main", "other")
    src2 = await LibrarySource.open(str(with_head), tmp_path / "cache")
    assert await src2.resolve() == c2 and await src2.resolve("other") == c1

    not_a_bundle = tmp_path / "notes.txt"
    not_a_bundle.write_text("hello\n")
    with pytest.raises(LibraryError, match="not a git bundle"):
        await LibrarySource.open(str(not_a_bundle), tmp_path / "cache")
