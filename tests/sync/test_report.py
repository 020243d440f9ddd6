"""The run report: exit codes per outcome mix, JSON round-trip, and the table a user reads."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from hubmirror.report import MAX_ROWS, REPORT_VERSION, Outcome, SyncReport
from hubmirror.server.status import _EXIT
from hubmirror.store import TransferStats

D1 = "sha256:" + "a1" * 32
D2 = "sha256:" + "b2" * 32
DEST = "127.0.0.1:5000/mirror"


def sample() -> SyncReport:
    rep = SyncReport(commit="abc123", library="https://github.com/docker-library/official-images.git", dest=DEST)
    rep.add(
        "copied",
        "docker.io/library/python:3.12",
        f"{DEST}/python",
        ["3.12", "3"],
        digest=D1,
        bytes=52_000_000,
        pulls=9,
    )
    rep.add(Outcome.RETAGGED, "docker.io/library/python:3.12-slim", f"{DEST}/python", ["slim"], digest=D2)
    rep.add(Outcome.UP_TO_DATE, "docker.io/library/redis:7", f"{DEST}/redis", ["7", "latest"], digest=D2)
    rep.add(Outcome.UP_TO_DATE, "docker.io/library/redis:6", f"{DEST}/redis", ["6"], digest=D1)
    rep.add(Outcome.DEFERRED, "docker.io/library/node:22", f"{DEST}/node", ["22"], reason="pull budget spent (150)")
    rep.add(
        Outcome.FAILED,
        "docker.io/library/docker:1.0",
        f"{DEST}/docker",
        ["1.0"],
        reason="schema 1 manifest: not copied (reference §E.11)",
    )
    rep.add(Outcome.PRUNED, "docker.io/library/python:3.8", f"{DEST}/python", ["3.8"], previous_digest=D2)
    rep.add(Outcome.KEPT, "docker.io/library/python:3.7", f"{DEST}/python", ["3.7"], reason="not created by hubmirror")
    src, dst = TransferStats(manifest_gets=9, manifest_heads=120), TransferStats(blob_uploads=4, blob_mounts=2)
    dst.blob_bytes_written = 52_000_000
    rep.totals.add_stats(src, dst)
    rep.totals.blobs_skipped = 7
    rep.totals.ratelimit_remaining, rep.totals.ratelimit_limit = 61, 100
    rep.finish()
    return rep


@pytest.mark.parametrize(
    ("outcomes", "code"),
    [
        ([], 0),
        (["copied", "retagged", "up_to_date", "pruned", "kept"], 0),
        (["copied", "deferred"], 75),
        (["deferred", "deferred"], 75),
        (["copied", "failed"], 1),
        (["deferred", "failed", "up_to_date"], 1),
        (["failed"], 1),
    ],
)
def test_exit_code_per_outcome_mix(outcomes: list[str], code: int) -> None:
    rep = SyncReport()
    for i, outcome in enumerate(outcomes):
        rep.add(outcome, f"docker.io/library/img{i}:1", f"{DEST}/img{i}", ["1"])
    assert rep.exit_code == code
    # The state's run status and the server's mapping back to an exit code agree with the report.
    assert _EXIT[rep.run_status] == code


def test_json_round_trip_and_stable_schema() -> None:
    rep = sample()
    data = json.loads(rep.to_json())
    assert data["version"] == REPORT_VERSION
    assert data["exit_code"] == 1
    assert data["successful"] == [
        "docker.io/library/python:3.12",
        "docker.io/library/python:3",
        "docker.io/library/python:slim",
        "docker.io/library/redis:7",
        "docker.io/library/redis:latest",
        "docker.io/library/redis:6",
    ]
    assert data["failed"] == ["docker.io/library/docker:1.0"]
    assert data["deferred"] == ["docker.io/library/node:22"]
    assert data["counts"] == {
        "copied": 1,
        "retagged": 1,
        "up_to_date": 2,
        "deferred": 1,
        "failed": 1,
        "pruned": 1,
        "kept": 1,
    }
    assert data["totals"]["manifest_gets"] == 9 and data["totals"]["blobs_mounted"] == 2
    assert data["totals"]["bytes"] == 52_000_000 and data["totals"]["ratelimit_remaining"] == 61
    assert data["items"][0] == {
        "outcome": "copied",
        "source": "docker.io/library/python:3.12",
        "dest": f"{DEST}/python",
        "tags": ["3.12", "3"],
        "digest": D1,
        "previous_digest": None,
        "reason": None,
        "bytes": 52_000_000,
        "pulls": 9,
        "mirrored": 0,
    }
    back = SyncReport.from_json(rep.to_json())
    assert back == rep
    assert back.to_json() == rep.to_json()


def test_reader_refuses_unknown_version() -> None:
    data = json.loads(sample().to_json())
    data["version"] = 99
    with pytest.raises(ValueError, match="unsupported report version 99"):
        SyncReport.from_dict(data)


def test_refs_with_registry_port_and_digest() -> None:
    rep = SyncReport()
    rep.add("copied", "127.0.0.1:5001/library/alpine:3.20", f"{DEST}/alpine", ["3.20", "3"])
    rep.add("copied", "127.0.0.1:5001/library/busybox@" + D1, f"{DEST}/busybox", [])
    assert rep.successful() == [
        "127.0.0.1:5001/library/alpine:3.20",
        "127.0.0.1:5001/library/alpine:3",
        "127.0.0.1:5001/library/busybox@" + D1,
    ]


def render(rep: SyncReport, *, verbose: bool = False) -> str:
    buf = io.StringIO()
    rep.render(Console(file=buf, width=200, color_system=None), verbose=verbose)
    return buf.getvalue()


def test_rendered_table_shows_failures_with_reasons_and_summary() -> None:
    text = render(sample())
    assert "schema 1 manifest: not copied (reference §E.11)" in text
    assert "pull budget spent (150)" in text
    assert "not created by hubmirror" in text
    for word in ("copied", "retagged", "deferred", "failed", "pruned"):
        assert word in text
    assert "up to date" in text and "2 image/tag groups" in text  # folded, not 2 rows
    assert "docker.io/library/redis:7" not in text
    last = text.strip().splitlines()[-1]
    assert last.startswith("copied 1, retagged 1, up to date 2, deferred 1, failed 1, pruned 1, kept 1")
    assert "9 pulls" in last and "quota left 61/100" in last and "52.0 MB" in last and last.endswith("exit 1")
    assert "docker.io/library/redis:7" in render(sample(), verbose=True)


def test_a_big_run_shows_the_first_rows_of_an_outcome_and_counts_the_rest() -> None:
    """A first sync of the whole library copies thousands of tag groups: the table shows MAX_ROWS of them
    and one counted row; --verbose and the JSON keep every item."""
    rep = SyncReport(dest=DEST)
    for i in range(MAX_ROWS + 25):
        rep.add("copied", f"docker.io/library/img{i}:1", f"{DEST}/img{i}", ["1"], digest=D1, pulls=1)
    rep.finish()
    text = render(rep)
    assert "img0" in text and f"img{MAX_ROWS + 24}" not in text
    assert "25 more image/tag groups" in text
    assert f"img{MAX_ROWS + 24}" in render(rep, verbose=True)
    assert len(json.loads(rep.to_json())["items"]) == MAX_ROWS + 25
    assert text.strip().splitlines()[-1].startswith(f"copied {MAX_ROWS + 25},")


def test_clean_run_renders_summary_only() -> None:
    rep = SyncReport(dry_run=True)
    rep.finish()
    lines = render(rep).strip().splitlines()
    assert len(lines) == 1  # no empty table
    assert lines[0].startswith("dry run: copied 0, retagged 0, up to date 0, deferred 0, failed 0 · 0 pulls")
    assert lines[0].endswith("exit 0")


def test_many_failures_with_one_reason_share_one_row_and_the_json_keeps_them_all() -> None:
    rep = SyncReport(dest=DEST)
    down = "registry-1.docker.io: registry unreachable (ClientConnectorError)"
    for i in range(40):
        rep.add("failed", f"docker.io/library/img{i}:1", f"{DEST}/img{i}", ["1"], reason=down)
    rep.add("failed", "docker.io/library/odd:1", f"{DEST}/odd", ["1"], reason="manifest unknown")
    rep.finish()
    text = render(rep)
    assert "40 image/tag groups" in text and text.count("registry unreachable") == 1
    assert "odd" in text and "manifest unknown" in text
    assert "img7:1" in render(rep, verbose=True)  # --verbose lists every item
    assert len(json.loads(rep.to_json())["failed"]) == 41
