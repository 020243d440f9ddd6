"""The real official-images history (bundle): every commit parses, stats and diffs match independent counts.

Skipped when the bundle is absent. The re-counts here use plain text and regexes on `git show` output,
never the implementation.
"""

from __future__ import annotations

import re
from pathlib import Path

from libtest_helpers import git_dir_cmd

from hubmirror.library import LibrarySource, ParseCache, diff_library, load_library

GITCOMMIT_ONLY = "f5cc636fb44167060e8256daa7f8aa39f5e7ace9"  # "Bump IBM Java version to 8.0.8.70"
NIM_ADDED = "d721d65"  # "Add Nim images."
BIG_JUMP = "d45ee56"  # 2021 snapshot → 2026: 15 repositories added, 21 removed


async def test_every_commit_parses(history: LibrarySource) -> None:
    commits = await history.first_parent_commits(None)
    assert len(commits) == 581
    cache = ParseCache()
    failures = []
    for c in commits:
        lib = await load_library(history, c, cache=cache)
        failures += [f"{c[:10]} {e}" for e in lib.errors]
        assert lib.repositories, c
    assert failures == []
    assert len(cache) < 1000  # unchanged blobs are parsed once, not once per commit


_LEGACY = r"^([^#\s][^:]*):\s*(\S+@\S+(?:\s+\S+)?)\s*$"


def _files(git_dir: Path, commit: str) -> list[str]:
    return git_dir_cmd(git_dir, "ls-tree", "--name-only", commit, "--", "library/").split()


def _show(git_dir: Path, commit: str, path: str) -> str:
    return git_dir_cmd(git_dir, "show", f"{commit}:{path}")


def _recount(git_dir: Path, commit: str) -> dict[str, int]:
    """Deliberately simple counts from the raw text of every library file."""
    files = _files(git_dir, commit)
    entries = platform_images = windows = merges = 0
    tags: set[str] = set()
    shared: set[str] = set()
    for path in files:
        text = _show(git_dir, commit, path)
        name = path.split("/")[-1]
        if not re.search(r"^Tags:", text, re.M):  # legacy line-based: "tag: url@commit dir"
            artifacts = set()
            for m in re.finditer(_LEGACY, text, re.M):
                tags.add(f"{name}:{m.group(1).strip()}")
                artifacts.add(m.group(2))
            entries += len(artifacts)
            platform_images += len(artifacts)
            continue
        lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
        joined = re.sub(r"\n[ \t]+", " ", "\n".join(lines))
        paragraphs = [p for p in re.split(r"\n\s*\n", joined) if p.strip()]
        fields = [dict(re.findall(r"^([\w-]+):[ \t]*(.*?)\s*$", p, re.M)) for p in paragraphs]
        glob, paras = fields[0], fields[1:]
        seen: dict[tuple[tuple[str, str], ...], int] = {}
        for f in paras:
            for t in f["Tags"].split(","):
                tags.add(f"{name}:{t.strip()}")
            for t in (f.get("SharedTags") or glob.get("SharedTags") or "").split(","):
                if t.strip():
                    shared.add(f"{name}:{t.strip()}")
            key = tuple(sorted((k, v) for k, v in f.items() if k not in ("Tags", "SharedTags")))
            if key in seen:
                merges += 1
                continue
            seen[key] = 1
            arches = {a.strip() for a in (f.get("Architectures") or glob.get("Architectures") or "amd64").split(",")}
            entries += 1
            platform_images += len(arches)
            windows += "windows-amd64" in arches
    return {
        "files": len(files),
        "entries": entries,
        "tags": len(tags | shared),
        "shared_tags": len(shared),
        "platform_images": platform_images,
        "windows_entries": windows,
        "merges": merges,
    }


async def _check_stats(history: LibrarySource, rev: str) -> dict[str, int]:
    lib = await load_library(history, rev)
    expected = _recount(history.git_dir, lib.commit)
    stats = lib.stats().as_dict()
    got = {k: stats[k] for k in expected if k != "merges"}
    got["merges"] = sum(r.merged for r in lib.repositories.values() if not r.legacy)
    assert got == expected
    assert stats["errors"] == 0
    return expected


async def test_stats_first_commit(history: LibrarySource) -> None:
    first = (await history.first_parent_commits(None))[0]
    counts = await _check_stats(history, first)
    assert counts["files"] == 148 and counts["merges"] == 7  # reference §A.7: 7 merges at 2021-02-12
    lib = await load_library(history, first)
    assert sorted(r.name for r in lib.repositories.values() if r.legacy) == ["sourcemage", "thrift"]


async def test_stats_last_commit(history: LibrarySource) -> None:
    counts = await _check_stats(history, "master")
    assert counts["files"] == 143 and counts["merges"] == 0


def _raw_tags(text: str) -> set[str]:
    if not re.search(r"^Tags:", text, re.M):
        return {m.group(1).strip() for m in re.finditer(_LEGACY, text, re.M)}
    out: set[str] = set()
    for m in re.finditer(r"^(?:Shared)?Tags:(.*)$", text, re.M):
        out.update(t.strip() for t in m.group(1).split(",") if t.strip())
    return out


def _entry_commits(text: str) -> set[str]:
    """GitCommit values (plain or per-arch) written in the entry paragraphs (not the global one)."""
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    paragraphs = re.split(r"\n\s*\n", "\n".join(lines).strip())
    return {c for p in paragraphs[1:] for c in re.findall(r"^(?:[\w-]+-)?GitCommit:\s*([0-9a-f]+)", p, re.M)}


async def _check_diff_against_git(history: LibrarySource, commit: str) -> None:
    gd = history.git_dir
    new = git_dir_cmd(gd, "rev-parse", commit).strip()
    old = git_dir_cmd(gd, "rev-parse", f"{new}^").strip()
    d = await diff_library(history, old, new)
    status = dict(
        (path.removeprefix("library/"), st)
        for st, path in (ln.split("\t") for ln in git_dir_cmd(gd, "diff", "--name-status", old, new).splitlines())
    )
    assert sorted(d.repositories_added) == sorted(n for n, s in status.items() if s == "A")
    assert sorted(d.repositories_removed) == sorted(n for n, s in status.items() if s == "D")
    assert sorted(d.repositories_changed) == sorted(n for n, s in status.items() if s == "M")
    added, removed = set(), set()
    for name, st in status.items():
        before = _raw_tags(_show(gd, old, f"library/{name}")) if st != "A" else set()
        after = _raw_tags(_show(gd, new, f"library/{name}")) if st != "D" else set()
        added |= {(name, t) for t in after - before}
        removed |= {(name, t) for t in before - after}
    assert set(d.tags_added) == added and set(d.tags_removed) == removed
    # every GitCommit that a changed file's entry paragraphs newly mention shows up as a rebuild or addition
    new_commits: set[str] = set()
    for name, st in status.items():
        if st != "D":
            after = _entry_commits(_show(gd, new, f"library/{name}"))
            new_commits |= after - (_entry_commits(_show(gd, old, f"library/{name}")) if st != "A" else set())
    rebuilt = {inp[3] for c in d.changed if c.rebuild for inp in c.new.build_key}
    assert new_commits <= rebuilt | {inp[3] for g in d.added for inp in g.build_key}


async def test_diff_gitcommit_only_commit(history: LibrarySource) -> None:
    await _check_diff_against_git(history, GITCOMMIT_ONLY)
    d = await diff_library(history, f"{GITCOMMIT_ONLY}^", GITCOMMIT_ONLY)
    assert d.changed and not d.added and not d.removed and not d.tags_added and not d.tags_removed
    assert all(c.rebuild and not c.tags_changed and not c.platforms_changed for c in d.changed)
    assert {t for _, t in d.tags_changed} == {t for c in d.changed for t in c.new.tags}


async def test_diff_added_repository(history: LibrarySource) -> None:
    await _check_diff_against_git(history, NIM_ADDED)
    d = await diff_library(history, f"{NIM_ADDED}^", NIM_ADDED)
    assert d.repositories_added == ["nim"] and d.added and all(g.repo == "nim" for g in d.added)


async def test_diff_added_and_removed_repositories(history: LibrarySource) -> None:
    await _check_diff_against_git(history, BIG_JUMP)
    d = await diff_library(history, f"{BIG_JUMP}^", BIG_JUMP)
    assert len(d.repositories_added) == 15 and len(d.repositories_removed) == 21
    assert "sourcemage" in d.repositories_removed
    old = await load_library(history, f"{BIG_JUMP}^")
    with_entries = {r for r in d.repositories_removed if old.repositories[r].entries}
    assert with_entries == set(d.repositories_removed) - {"opensuse", "sentry"}  # deprecated: no entries left
    assert {g.repo for g in d.removed} >= with_entries


async def test_diff_sample_of_consecutive_commits(history: LibrarySource) -> None:
    commits = await history.first_parent_commits(None)
    sample = commits[2::29]  # 20 commits spread over the history
    assert len(sample) == 20
    for c in sample:
        await _check_diff_against_git(history, c)
