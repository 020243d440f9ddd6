"""Filters (repositories, tags, platforms) and the `hubmirror library` commands on a small git repository."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from libtest_helpers import LibRepo
from test_git import GOLANG, PYTHON, ROCKET
from typer.testing import CliRunner

from hubmirror import HubmirrorError, LibraryError
from hubmirror.cli import app
from hubmirror.library import LibraryFilter, TagGroup, parse_library_file, read_images_file
from hubmirror.platform import Platform

C1, C2 = "1" * 40, "2" * 40
AMD64, ARM64, WIN = Platform("linux", "amd64"), Platform("linux", "arm64", "v8"), Platform("windows", "amd64")


def golang_groups() -> list[TagGroup]:
    return list(parse_library_file(GOLANG.format(commit=C1), "golang").tag_groups())


def test_images_file(tmp_path: Path) -> None:
    f = tmp_path / "images.txt"
    f.write_text("# wanted\n\ngolang\ndocker.io/library/python  # trailing comment\npg*\n")
    assert read_images_file(f) == ("golang", "python", "pg*")
    f.write_text("golang\nNot/A Name\n")
    with pytest.raises(LibraryError) as info:
        read_images_file(f)
    assert (info.value.file, info.value.line) == (str(f), 2) and "Not/A Name" in str(info.value)


def test_default_platforms_are_linux_only_and_upstream_kept() -> None:
    groups = LibraryFilter().apply(golang_groups())
    assert [g.tags for g in groups] == [("1.22.1-bookworm", "1.22-bookworm", "bookworm"), ("1.22.1", "1.22", "latest")]
    latest = groups[1]
    assert latest.platforms == (AMD64, ARM64) and latest.upstream_platforms == (AMD64, ARM64, WIN)
    assert latest.platforms_filtered and not groups[0].platforms_filtered


def test_windows_and_platform_lists() -> None:
    with_windows = LibraryFilter(windows=True).apply(golang_groups())
    assert len(with_windows) == 3 and not any(g.platforms_filtered for g in with_windows)
    arm_only = LibraryFilter.build(platforms=["linux/arm64"]).apply(golang_groups())
    assert [g.platforms for g in arm_only] == [(ARM64,), (ARM64,)]
    win_named = LibraryFilter.build(platforms=["windows/amd64"]).apply(golang_groups())
    assert [g.tags[0] for g in win_named] == ["1.22.1-windowsservercore", "1.22.1"]


def test_repository_globs_and_tag_regexes() -> None:
    groups = golang_groups() + list(parse_library_file(PYTHON, "python").tag_groups())
    assert {g.repo for g in LibraryFilter.build(images=["go*"]).apply(groups)} == {"golang"}
    f = LibraryFilter.build(include=[r"1\.22.*", "latest"], exclude=[".*bookworm"])
    kept = {(g.repo, t) for g in f.apply(groups) for t in g.tags}
    assert kept == {("golang", "1.22.1"), ("golang", "1.22"), ("golang", "latest"), ("python", "latest")}
    with pytest.raises(HubmirrorError, match="invalid --include regex"):
        LibraryFilter.build(include=["("])


@pytest.fixture
def cli_repo(make_lib_repo: Callable[[str], LibRepo]) -> tuple[LibRepo, str, str]:
    repo = make_lib_repo("oi")
    a = repo.commit({"golang": GOLANG.format(commit=C1), "python": PYTHON})
    b = repo.commit({"golang": GOLANG.format(commit=C2), "rocket.chat": ROCKET, "python": None})
    return repo, a, b


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_cli_stats(cli_repo: tuple[LibRepo, str, str], tmp_path: Path) -> None:
    repo, a, _b = cli_repo
    code, out, _ = run("library", "stats", "--library", str(repo.path), "--commit", a, "--json")
    assert code == 0
    data = json.loads(out)
    assert data["commit"] == a
    assert {k: data[k] for k in ("files", "entries", "tags", "shared_tags", "platform_images", "windows_entries")} == {
        "files": 2,
        "entries": 3,
        "tags": 12,
        "shared_tags": 3,
        "platform_images": 6,
        "windows_entries": 1,
    }
    code, _, err = run("library", "stats", "--source", str(repo.path))  # the old name, kept as a hidden alias
    assert code == 0 and "platform_images" in err  # the rich table goes to stderr


def test_cli_list_with_filters(cli_repo: tuple[LibRepo, str, str]) -> None:
    repo, a, _ = cli_repo
    code, out, _ = run(
        "library", "list", "--library", str(repo.path), "--commit", a, "--images", "golang", "--include", "latest|1.22",
        "--json",
    )  # fmt: skip
    assert code == 0
    rows = json.loads(out)
    assert rows == [
        {
            "repo": "golang",
            "tags": ["1.22", "latest"],
            "platforms": ["linux/amd64", "linux/arm64/v8"],
            "upstream_platforms": ["linux/amd64", "linux/arm64/v8", "windows/amd64"],
            "shared": True,
            "windows": True,
        }
    ]
    code, out, _ = run("library", "list", "--library", str(repo.path), "--commit", a, "--images", "python")
    assert code == 0 and out.strip() == "python  3.12.2, 3.12, 3, latest  [linux/amd64, linux/arm/v7, linux/s390x]"


def test_cli_diff_and_errors(cli_repo: tuple[LibRepo, str, str]) -> None:
    repo, a, b = cli_repo
    code, out, _ = run("library", "diff", a, b, "--library", str(repo.path), "--json")
    assert code == 0
    data = json.loads(out)
    assert data["repositories_added"] == ["rocket.chat"] and data["repositories_removed"] == ["python"]
    assert all(c["rebuild"] for c in data["changed"]) and len(data["changed"]) == 3
    code, out, _ = run("library", "diff", a, b, "--library", str(repo.path))
    assert code == 0 and "+ repository rocket.chat" in out and "- repository python" in out and "rebuild" in out
    code, _, err = run("library", "diff", a, "v9.9-nope", "--library", str(repo.path))
    assert code == 1 and "unknown revision 'v9.9-nope'" in err
