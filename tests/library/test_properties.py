"""Property tests: generated and mutated library files never crash the parser, and every error names a line."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hubmirror import LibraryError
from hubmirror.library import Repository, parse_library_file

FIELDS = [
    "Maintainers",
    "Tags",
    "SharedTags",
    "Architectures",
    "GitRepo",
    "GitFetch",
    "GitCommit",
    "Directory",
    "File",
    "Builder",
    "Constraints",
    "arm64v8-GitCommit",
    "windows-amd64-Directory",
    "Architecture",
    "tags",
]
VALUES = [
    "Jane Doe <jane@example.com> (@jane)",
    "A (@a), B (@b)",
    "1.0, 1, latest",
    "latest",
    "a,,b",
    "amd64, arm64v8, windows-amd64",
    "s390x",
    "sparc",
    "https://github.com/x/y.git",
    "refs/heads/main",
    "refs/tags/v1",
    "c" * 40,
    "d" * 64,
    "1.5/ppc64le/",
    "buildkit",
    "windowsservercore-ltsc2022",
    "",
]

field_line = st.builds(
    lambda k, v, sep: f"{k}{sep}{v}",
    st.sampled_from(FIELDS),
    st.sampled_from(VALUES),
    st.sampled_from([": ", ":", " : "]),
)
odd_line = st.sampled_from(["", " ", "\t", " .", "# comment", "   # indented", "no colon here", "\r", " continued, x"])
paragraph = st.lists(st.one_of(field_line, field_line, field_line, odd_line), min_size=1, max_size=8)
library_text = st.builds(
    lambda head, paras, crlf, final: (
        ("\r\n" if crlf else "\n").join(
            ["Maintainers: Jane Doe <jane@example.com> (@jane)", "GitRepo: https://github.com/x/y.git", *head]
            + [line for p in paras for line in ["", *p]]
        )
        + ("\n" if final else "")
    ),
    st.lists(field_line, max_size=3),
    st.lists(paragraph, max_size=6),
    st.booleans(),
    st.booleans(),
)


def check(text: str | bytes) -> None:
    lines = max(1, len((text.decode("utf-8", "replace") if isinstance(text, bytes) else text).split("\n")))
    try:
        repo = parse_library_file(text, "prop")
    except LibraryError as err:
        assert err.file == "library/prop"
        assert err.line is not None and 1 <= err.line <= lines, (err, lines)
        assert str(err).startswith(f"library/prop:{err.line}: ")
        return
    assert isinstance(repo, Repository)
    for e in repo.entries:
        assert e.tags and all(e.tags) and e.architectures == tuple(sorted(set(e.architectures)))
        assert len(e.platforms) == len(e.architectures)
    all_tags = [t for g in repo.tag_groups() for t in g.tags]
    assert len(all_tags) == len(set(all_tags)), "a tag resolves to exactly one manifest"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(library_text)
def test_generated_files(text: str) -> None:
    check(text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(library_text, st.data())
def test_mutated_files(text: str, data: st.DataObject) -> None:
    raw = bytearray(text.encode())
    for _ in range(data.draw(st.integers(1, 5))):
        op = data.draw(st.sampled_from(["insert", "delete", "flip"]))
        pos = data.draw(st.integers(0, len(raw)))
        if op == "insert":
            raw[pos:pos] = data.draw(
                st.binary(min_size=1, max_size=4) | st.sampled_from([b"\n", b":", b"#", b" ", b","])
            )
        elif raw and pos < len(raw):
            if op == "delete":
                del raw[pos : pos + data.draw(st.integers(1, 8))]
            else:
                raw[pos] ^= 1 << data.draw(st.integers(0, 7))
    check(bytes(raw))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400))
def test_arbitrary_text(text: str) -> None:
    check(text)
