"""The library-file grammar, rule by rule, as bashbrew parses it (reference §A.2–A.8)."""

from __future__ import annotations

import pytest

from hubmirror import LibraryError
from hubmirror.library import ParseWarning, Repository, parse_library_file
from hubmirror.platform import Platform

C1 = "1" * 40
C2 = "2" * 40
C3 = "3" * 40
HEAD = "Maintainers: Jane Doe <jane@example.com> (@jane)\nGitRepo: https://github.com/x/y.git\n"


def parse(text: str, name: str = "demo") -> Repository:
    return parse_library_file(text, name)


def error(text: str) -> LibraryError:
    with pytest.raises(LibraryError) as info:
        parse(text)
    return info.value


# --- comments, paragraphs, continuations -------------------------------------------------------------------


def test_comment_mid_paragraph_does_not_split_it() -> None:
    repo = parse(HEAD + f"\nTags: 1.0\n# a comment\n    # indented comment\nGitCommit: {C1}\n")
    assert [e.tags for e in repo.entries] == [("1.0",)]
    assert repo.entries[0].git_commit == C1


def test_no_inline_comments() -> None:
    err = error(HEAD + f"\nTags: a, b # x\nGitCommit: {C1}\n")
    assert "b # x" in err.reason and err.line == 4


def test_whitespace_only_line_is_a_continuation_not_a_separator() -> None:
    # "Tags: 1.0\n \nGitCommit" stays one paragraph (historical traefik/rust blobs)
    repo = parse(HEAD + f"\nTags: 1.0,\n \n  1.0.1\nGitCommit: {C1}\n")
    assert repo.entries[0].tags == ("1.0", "1.0.1")


def test_tab_and_space_continuations_and_dot_line() -> None:
    repo = parse(HEAD + f"\nTags: 1.0,\n\t1.1,\n .\n 1.2\t\t\nGitCommit: {C1}\n")
    assert repo.entries[0].tags == ("1.0", "1.1", "1.2")


def test_continuation_of_single_valued_field_fails_validation() -> None:
    err = error(HEAD + f"\nTags: 1.0\nGitCommit: {C1[:20]}\n {C1[20:]}\n")
    assert "invalid GitCommit" in err.reason and err.line == 5


def test_leading_space_first_line_is_ignored_continuation() -> None:
    repo = parse(" stray continuation\n" + HEAD + f"\nTags: 1.0\nGitCommit: {C1}\n")
    assert repo.maintainers == ("Jane Doe <jane@example.com> (@jane)",)


def test_crlf_and_no_final_newline_and_many_blank_lines() -> None:
    text = (HEAD + f"\n\n\n\nTags: 1.0\nGitCommit: {C1}\n\n\nTags: 2.0\nGitCommit: {C2}").replace("\n", "\r\n")
    text = text.removesuffix("\r\n")
    repo = parse("\r\n\r\n" + text)
    assert [e.tags for e in repo.entries] == [("1.0",), ("2.0",)]
    assert repo.entries[1].git_commit == C2


def test_split_at_first_colon_and_trim() -> None:
    repo = parse(HEAD + f"\nTags : 1.0\nGitCommit:{C1}\nGitRepo:   https://example.com:8443/r.git  \n")
    assert repo.entries[0].git_repo == "https://example.com:8443/r.git"


def test_line_without_colon_is_an_error_naming_the_line() -> None:
    err = error(HEAD + "\nTags: 1.0\nthis line has no colon\n")
    assert err.line == 5 and err.file == "library/demo" and "has no ':'" in err.reason
    assert str(err).startswith("library/demo:5:")


def test_duplicate_field_last_wins() -> None:
    repo = parse(HEAD + f"\nTags: 1.0\nGitCommit: {C2}\nGitCommit: {C1}\n")
    assert repo.entries[0].git_commit == C1


def test_field_names_are_case_sensitive_and_unknown_ones_warned() -> None:
    repo = parse(HEAD + f"\nTags: 1.0\nArchitecture: arm64v8\ngitcommit: {C2}\nGitCommit: {C1}\n")
    e = repo.entries[0]
    assert e.architectures == ("amd64",) and e.git_commit == C1
    assert repo.warnings == (
        ParseWarning("library/demo", 5, "unknown field 'Architecture' ignored"),
        ParseWarning("library/demo", 6, "unknown field 'gitcommit' ignored"),
    )


def test_list_fields_split_and_trimmed_empty_item_kept() -> None:
    repo = parse(HEAD + f"\nTags:  a ,b,\n  c\nSharedTags: s1 , s2\nGitCommit: {C1}\n")
    assert repo.entries[0].tags == ("a", "b", "c") and repo.entries[0].shared_tags == ("s1", "s2")
    err = error(HEAD + f"\nTags: a, b,\nGitCommit: {C1}\n")
    assert "invalid (Shared)Tags" in err.reason and "''" in err.reason and err.line == 4


# --- inheritance -------------------------------------------------------------------------------------------


def test_global_defaults_and_inheritance_rules() -> None:
    text = (
        "Maintainers: A (@a), B <b@example.com> (@b)\n"
        "GitRepo: https://github.com/x/y.git\n"
        "SharedTags: shared\n"
        "Architectures: amd64, arm64v8\n"
        "Constraints: base\n"
        "GitFetch: refs/heads/main\n"
        "\n"
        f"Tags: 1\nGitCommit: {C1}\n"
        "\n"
        f"Tags: 2\nSharedTags: other\nArchitectures: s390x, amd64, s390x\nConstraints: extra\nGitCommit: {C2}\n"
        "Maintainers: C (@c)\n"
    )
    one, two = parse(text).entries
    assert one.shared_tags == ("shared",) and one.architectures == ("amd64", "arm64v8")
    assert one.git_fetch == "refs/heads/main" and one.constraints == ("base",)
    assert one.directory == "." and one.file == "Dockerfile" and one.builder == ""
    assert two.shared_tags == ("other",)  # replaced
    assert two.architectures == ("amd64", "s390x")  # replaced, sorted, de-duplicated
    assert two.constraints == ("base", "extra")  # appended
    assert two.maintainers == ("A (@a)", "B <b@example.com> (@b)", "C (@c)")  # appended


def test_builtin_defaults() -> None:
    e = parse(HEAD + f"\nTags: 1\nGitCommit: {C1}\n").entries[0]
    assert (e.architectures, e.git_fetch, e.directory, e.file, e.builder) == (
        ("amd64",),
        "refs/heads/master",
        ".",
        "Dockerfile",
        "",
    )


def test_directory_is_path_cleaned() -> None:
    e = parse(HEAD + f"\nTags: 1\nGitCommit: {C1}\nDirectory: 1.5/ppc64le/\nppc64le-Directory: ./a//b/../c/\n").entries[
        0
    ]
    assert e.directory == "1.5/ppc64le"
    assert e.arch_value("Directory", "ppc64le") == "a/c"


# --- per-architecture overrides ----------------------------------------------------------------------------


def test_per_arch_overrides_from_global_and_entry() -> None:
    text = (
        HEAD
        + f"Architectures: amd64, arm64v8, windows-amd64\narm64v8-GitFetch: refs/heads/arm\narm64v8-GitCommit: {C2}\n"
        + f"\nTags: 1\nGitCommit: {C1}\nwindows-amd64-Directory: win/\nwindows-amd64-File: Dockerfile.win\n"
        + "amd64-GitCommit:\ns390x-GitFetch: refs/heads/nope\nbogus-Builder: buildkit\n"
    )
    repo = parse(text)
    e = repo.entries[0]
    assert e.arch_value("GitCommit", "arm64v8") == C2 and e.arch_value("GitFetch", "arm64v8") == "refs/heads/arm"
    assert e.arch_value("GitCommit", "amd64") == C1  # empty arch value falls back to the plain field
    assert e.arch_value("Directory", "windows-amd64") == "win"
    assert e.arch_value("File", "windows-amd64") == "Dockerfile.win"
    assert e.arch_value("Directory", "amd64") == "."
    # unknown arch prefix and an arch not in Architectures are accepted, create no platform, warn nothing
    assert e.platforms == (Platform("linux", "amd64"), Platform("linux", "arm64", "v8"), Platform("windows", "amd64"))
    assert repo.warnings == ()


def test_per_arch_values_are_not_regex_checked() -> None:
    e = parse(HEAD + f"\nTags: 1\nGitCommit: {C1}\namd64-GitCommit: not-a-commit\n").entries[0]
    assert e.arch_value("GitCommit", "amd64") == "not-a-commit"


# --- validations (§A.7) ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        ("GitRepo: x\n\nTags: 1\n", 1, "missing Maintainers"),
        ("Maintainers: no handle\n", 1, "invalid Maintainers"),
        ("Maintainers: A (@a)\nTags: 1\n", 2, "global Tags not permitted"),
        ("Maintainers: A (@a)\nArchitectures: amd64, sparc\n", 2, "invalid global Architectures"),
        (HEAD + f"\nTags: 1\nGitFetch: main\nGitCommit: {C1}\n", 5, "invalid GitFetch"),
        (HEAD + f"\nTags: 1\nGitFetch: refs/heads/*\nGitCommit: {C1}\n", 5, "invalid GitFetch"),
        (HEAD + f"\nTags: 1\nGitCommit: {'A' * 40}\n", 5, "invalid GitCommit"),
        (HEAD + "\nTags: 1\nGitCommit: v1.0\n", 5, "invalid GitCommit"),
        (HEAD + f"\nGitCommit: {C1}\nDirectory: x\n", 4, "missing Tags"),
        ("Maintainers: A (@a)\n\nTags: 1\nGitCommit: " + C1 + "\n", 3, "missing one of GitRepo"),
        (HEAD + f"\nTags: -bad\nGitCommit: {C1}\n", 4, "invalid (Shared)Tags"),
        (HEAD + f"\nTags: ok\nSharedTags: {'x' * 129}\nGitCommit: {C1}\n", 5, "invalid (Shared)Tags"),
        (HEAD + f"\nTags: 1\nArchitectures: amd64, arm64\nGitCommit: {C1}\n", 5, "invalid Architectures"),
        (HEAD + f"\nTags: 1\nGitCommit: {C1}\n\nTags: 2, 1\nGitCommit: {C2}\n", 7, "duplicate tag: '1'"),
        (
            HEAD + f"\nTags: 1\nSharedTags: s\nGitCommit: {C1}\n\nTags: s\nGitCommit: {C2}\n",
            8,
            "conflicting with a shared",
        ),
        (
            HEAD + f"\nTags: 1\nGitCommit: {C1}\n\nTags: 2\nSharedTags: 1\nGitCommit: {C2}\n",
            8,
            "conflicting shared tag",
        ),
        (HEAD + f"\nTags: 1, 1\nGitCommit: {C1}\n", 4, "duplicate tag: '1'"),
        (HEAD + f"\nTags: 1\nSharedTags: 1\nGitCommit: {C1}\n", 5, "(in SharedTags)"),
    ],
)
def test_validations_name_file_and_line(text: str, line: int, needle: str) -> None:
    err = error(text)
    assert needle in err.reason
    assert (err.file, err.line) == ("library/demo", line)


def test_valid_edge_values() -> None:
    c64 = "a" * 64
    repo = parse(HEAD + f"\nTags: 8.5.10RC1, {'t' * 128}\nSharedTags: s, s\nGitCommit: {c64}\nGitFetch: refs/tags/v1\n")
    e = repo.entries[0]
    assert e.tags == ("8.5.10RC1", "t" * 128) and e.shared_tags == ("s",)  # SharedTags duplicates dropped
    assert e.git_commit == c64


def test_same_shared_tag_on_several_entries_is_allowed() -> None:
    repo = parse(HEAD + f"\nTags: a\nSharedTags: s\nGitCommit: {C1}\n\nTags: b\nSharedTags: s\nGitCommit: {C2}\n")
    assert [e.shared_tags for e in repo.entries] == [("s",), ("s",)]


# --- merging (§A.7.7) --------------------------------------------------------------------------------------


def test_entries_with_identical_artifacts_are_merged() -> None:
    text = HEAD + (
        f"\nTags: 1.0, 1\nSharedTags: s\nGitCommit: {C1}\n"
        f"\nTags: 1.0-alias\nSharedTags: s, t\nGitCommit: {C1}\n"
        f"\nTags: 2.0\nGitCommit: {C1}\nDirectory: other\n"
    )
    repo = parse(text)
    assert repo.merged == 1
    assert [e.tags for e in repo.entries] == [("1.0", "1", "1.0-alias"), ("2.0",)]
    assert repo.entries[0].shared_tags == ("s", "t")
    groups = repo.tag_groups()
    assert [g.tags for g in groups] == [("1.0", "1", "1.0-alias"), ("2.0",), ("s", "t")]


def test_differing_arch_values_prevent_merging() -> None:
    text = HEAD + f"\nTags: a\nGitCommit: {C1}\n\nTags: b\nGitCommit: {C1}\namd64-Directory: x\n"
    assert parse(text).merged == 0


# --- tag groups (§A.5) -------------------------------------------------------------------------------------


def test_shared_tag_groups_by_exact_entry_list() -> None:
    text = HEAD + (
        f"\nTags: 1-linux\nSharedTags: 1, latest\nArchitectures: amd64, arm64v8\nGitCommit: {C1}\n"
        f"\nTags: 1-win\nSharedTags: 1, latest\nArchitectures: windows-amd64\nGitCommit: {C2}\n"
        f"\nTags: 1-win-other\nSharedTags: 1, latest, win\nArchitectures: windows-amd64\nGitCommit: {C3}\n"
    )
    groups = parse(text).tag_groups()
    by_tags = {g.tags: g for g in groups}
    shared = by_tags[("1", "latest")]
    assert shared.shared and shared.windows and shared.entries == ("1-linux", "1-win", "1-win-other")
    assert shared.platforms == (
        Platform("linux", "amd64"),
        Platform("linux", "arm64", "v8"),
        Platform("windows", "amd64"),
    )
    single = by_tags[("win",)]
    assert single.entries == ("1-win-other",) and single.platforms == (Platform("windows", "amd64"),)
    linux = by_tags[("1-linux",)]
    assert not linux.shared and not linux.windows
    # a SharedTag carried by one entry is built from exactly that entry's inputs
    assert single.build_key == by_tags[("1-win-other",)].build_key != shared.build_key


def test_build_key_follows_build_inputs_only() -> None:
    base = HEAD + f"\nTags: 1\nArchitectures: amd64, arm64v8\nGitCommit: {C1}\n"
    k = parse(base).tag_groups()[0].build_key
    assert parse(base.replace("Tags: 1", "Tags: 1, one")).tag_groups()[0].build_key == k
    assert parse(base + f"arm64v8-GitCommit: {C2}\n").tag_groups()[0].build_key != k
    assert parse(base + "File: Dockerfile.alt\n").tag_groups()[0].build_key != k


# --- legacy line-based format (§A.8) ------------------------------------------------------------------------


def test_legacy_line_based_file() -> None:
    text = (
        "# maintainer: Adam Hawkins <hi@ahawkins.me> (@ahawkins)\n\n"
        f"0.9: git://github.com/a/docker-thrift@{C1} 0.9\n"
        f"0.9.3: git://github.com/a/docker-thrift@{C1} 0.9/\n"
        "latest: git://github.com/a/docker-thrift@v1.2 stable\n"
    )
    repo = parse(text, "thrift")
    assert repo.legacy and repo.merged == 1
    first, second = repo.entries
    assert first.tags == ("0.9", "0.9.3") and first.git_fetch == "refs/heads/*" and first.directory == "0.9"
    assert second.git_fetch == "refs/tags/v1.2" and second.git_commit == "FETCH_HEAD"
    assert second.line == 5


def test_unparseable_file_reports_the_2822_error() -> None:
    err = error("# just a comment\nnot a library file\n")
    assert err.line == 2 and "has no ':'" in err.reason


def test_bytes_input_with_invalid_utf8_does_not_crash() -> None:
    repo = parse_library_file(HEAD.encode() + f"\nTags: 1\nGitCommit: {C1}\nX-Note: \xff\xfe\n".encode("latin-1"), "b")
    assert repo.entries[0].tags == ("1",) and repo.warnings[0].line == 6
