"""The state database: create, reopen, migrate, lock across processes, survive kill -9, refuse corruption."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from hubmirror import StateError, StateLocked
from hubmirror.state import SCHEMA_VERSION, State

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
REPO = "127.0.0.1:5000/mirror/python"


#: Undo what the migrations after 5 add, to make a state of schema 5 (the library key migration's input).
_AFTER_V5 = (
    "DROP TABLE tag_owners",
    "DROP TABLE deletions",
    "ALTER TABLE runs DROP COLUMN job",
    "DROP TABLE tag_intents",
    *(f"DROP TABLE {t}" for t in ("work_runs", "work_units", "work_workers", "pull_quota")),  # the workers block
    "DROP TABLE work_blobs",  # blobs in flight between workers (version 10)
    "DROP TABLE serve_triggers",  # the serve replicas block
    "DROP TABLE serve_deliveries",
    "DROP TABLE pull_quota_workers",  # the pulls out, per worker (version 12)
)


def _password(where: str) -> str | None:
    """The password inside a ``postgresql://user:password@host`` URL."""
    if "://" not in where or "@" not in where:
        return None
    userinfo = where.split("://", 1)[1].split("@", 1)[0]
    return userinfo.split(":", 1)[1] if ":" in userinfo else None


def spawn(code: str, *args: str) -> subprocess.Popen[str]:
    """A Python child running *code*; it talks to us over stdout lines (no timing involved)."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def test_create_record_and_reopen(where: str) -> None:
    path = where
    with State.open(path) as st:
        assert st.schema_version == SCHEMA_VERSION
        run = st.begin_run(commit="abc123")
        st.record_tag(REPO, "3.12", source_ref="docker.io/library/python:3.12", upstream_digest=D1, run_id=run)
        st.record_tag(REPO, "3", source_ref="docker.io/library/python:3", upstream_digest=D1, run_id=run)
        st.set_library_commit("https://github.com/docker-library/official-images.git", "abc123")
        st.finish_run(run, "completed", {"copied": 1, "retagged": 1})

    with State.open(path) as st:
        rec = st.tag(REPO, "3.12")
        assert rec is not None
        assert (rec.source_ref, rec.upstream_digest, rec.dest_digest) == ("docker.io/library/python:3.12", D1, D1)
        assert rec.created_by_hubmirror and rec.run_id == run
        assert [r.tag for r in st.tags(REPO)] == ["3", "3.12"]
        assert st.tag(REPO, "2.7") is None
        assert st.library_commit("https://github.com/docker-library/official-images.git") == "abc123"
        assert st.library_commit("/some/other/checkout") is None
        [last] = st.runs(5)
        assert (last.status, last.commit, last.summary) == ("completed", "abc123", {"copied": 1, "retagged": 1})
        assert last.finished is not None and last.finished >= last.started
        if st.path is not None:  # SQLite: WAL mode is on, so readers never block the writer.
            assert st._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_record_updates_digest_but_keeps_created_flag(where: str) -> None:
    with State.open(where) as st:
        # Tag found already at the destination before hubmirror ever pushed it: not ours.
        st.record_tag(REPO, "old", source_ref="docker.io/library/python:old", upstream_digest=D1, created=False)
        st.record_tag(REPO, "new", source_ref="docker.io/library/python:new", upstream_digest=D1)
        updated = st.record_tag(REPO, "old", source_ref="docker.io/library/python:old", upstream_digest=D2)
        assert updated.dest_digest == D2
        assert updated.created_by_hubmirror is False  # a later push does not make it prunable
        assert {r.tag for r in st.tags(REPO) if r.created_by_hubmirror} == {"new"}
        assert st.forget_tag(REPO, "new") is True
        assert st.forget_tag(REPO, "new") is False
        assert [r.tag for r in st.tags()] == ["old"]
        assert [r.tag for r in st.tags(source_ref="docker.io/library/python:old")] == ["old"]
        assert st.dest_repos() == [REPO]


def test_deferred_work_round_trip(where: str) -> None:
    with State.open(where) as st:
        first = st.defer("docker.io/library/python:3.12", REPO, ["3.12", "3"], "pull budget spent")
        st.defer("docker.io/library/golang:1.22", "r/mirror/golang", ["1.22"], "quota 429")
        again = st.defer("docker.io/library/python:3.12", REPO, ["3", "latest"], "pull budget spent (2nd run)")
        assert again.id == first.id and again.since == first.since
        assert again.tags == ("3.12", "3", "latest")
        assert again.reason == "pull budget spent (2nd run)"
    with State.open(where) as st:
        items = st.deferred()
        assert [i.source_ref for i in items] == ["docker.io/library/python:3.12", "docker.io/library/golang:1.22"]
        assert st.clear_deferred("docker.io/library/python:3.12", REPO) is True
        assert st.clear_deferred("docker.io/library/python:3.12", REPO) is False
        assert [i.dest_repo for i in st.deferred()] == ["r/mirror/golang"]
        st.defer("docker.io/library/golang:1.23", "r/mirror/golang", ["1.23"], "quota 429")
        gone = [(f"docker.io/library/golang:{v}", "r/mirror/golang") for v in ("1.22", "1.23")]
        assert st.clear_deferred_many([*gone, ("docker.io/library/none:1", REPO)]) == 2  # one transaction
        assert st.clear_deferred_many(gone) == 0 and st.clear_deferred_many([]) == 0
        assert st.deferred() == []


def test_interrupted_run_is_marked_at_next_begin(where: str) -> None:
    with State.open(where) as st:
        killed = st.begin_run()
    with State.open(where) as st:
        current = st.begin_run()
        statuses = {r.id: r.status for r in st.runs(10)}
        assert statuses == {killed: "interrupted", current: "running"}
        with pytest.raises(ValueError, match="invalid run status"):
            st.finish_run(current, "bogus")


def test_migrates_from_v1(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE schema_version (version INTEGER NOT NULL);
        INSERT INTO schema_version VALUES (1);
        CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, started TEXT NOT NULL, finished TEXT,
                           status TEXT NOT NULL, "commit" TEXT, summary TEXT);
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE tags (dest_repo TEXT NOT NULL, tag TEXT NOT NULL, source_ref TEXT NOT NULL,
                           upstream_digest TEXT NOT NULL, dest_digest TEXT NOT NULL, synced_at TEXT NOT NULL,
                           run_id INTEGER, PRIMARY KEY (dest_repo, tag));
        INSERT INTO runs (started, finished, status, "commit", summary)
            VALUES ('2025-01-01T00:00:00+00:00', '2025-01-01T01:00:00+00:00', 'completed', 'c0ffee', '{"copied": 7}');
        INSERT INTO meta VALUES ('library_commit:lib', 'c0ffee');
        """
    )
    conn.execute(
        "INSERT INTO tags VALUES (?, ?, ?, ?, ?, ?, ?)",
        (REPO, "3.11", "docker.io/library/python:3.11", D1, D1, "2025-01-01T00:30:00+00:00", 1),
    )
    conn.execute(  # a filtered copy (destination digest differs): its platform selection is unknown
        "INSERT INTO tags VALUES (?, ?, ?, ?, ?, ?, ?)",
        (REPO, "3.12", "docker.io/library/python:3.12", D1, D2, "2025-01-01T00:30:00+00:00", 1),
    )
    conn.commit()
    conn.close()

    with State.open(path) as st:
        assert st.schema_version == SCHEMA_VERSION
        rec = st.tag(REPO, "3.11")
        assert rec is not None and rec.upstream_digest == D1
        assert rec.created_by_hubmirror is True  # v1 only recorded tags it pushed
        assert rec.platforms == ""  # v3: copied verbatim, i.e. every platform
        filtered = st.tag(REPO, "3.12")
        assert filtered is not None and filtered.platforms is None
        assert st.library_commit("lib") == "c0ffee"
        assert st.runs(1)[0].summary == {"copied": 7}
        assert st.deferred() == []  # the table v2 added exists
        st.defer("docker.io/library/python:3.11", REPO, ["3.11"], "budget")
    with State.open(path) as st:  # reopening a migrated file is a no-op
        assert st.schema_version == SCHEMA_VERSION
        assert len(st.deferred()) == 1


def test_v6_keys_library_commits_by_the_url_without_its_credentials(where: str) -> None:
    """A state of schema 5 kept the library commit under the URL as given, token and all: the migration keys
    it by the URL without credentials (the same library for the next run), on both backends."""
    url = "https://x-access-token:tok3n-0123456789@git.example.com/official-images.git"
    plain = "https://github.com/docker-library/official-images.git"
    with State.open(where) as st:
        st.set_meta("library_commit:" + url, "c0ffee")  # as schema 5 wrote it
        st.set_meta("library_commit:" + plain, "beef")
        for undo in _AFTER_V5:  # back to what schema 5 had
            st._conn.execute(undo)
        st._conn.execute("UPDATE schema_version SET version = 5")
    with State.open(where) as st:
        assert st.schema_version == SCHEMA_VERSION
        assert st.library_commits() == {"https://***@git.example.com/official-images.git": "c0ffee", plain: "beef"}
        assert st.library_commit(url) == "c0ffee"  # looked up without the token, whichever token
        assert st.library_commit(url.replace("tok3n", "other")) == "c0ffee"
        st.set_library_commit(url, "d00d")
        assert st.library_commits()["https://***@git.example.com/official-images.git"] == "d00d"
    if "://" not in where:  # SQLite: the file was rebuilt, no copy of the token is left
        files = [Path(where), Path(where + "-wal")]
        assert not [f for f in files if f.exists() and b"tok3n-0123456789" in f.read_bytes()]


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    State.open(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE schema_version SET version = 99")
    conn.commit()
    conn.close()
    with pytest.raises(StateError, match=r"future\.db: state schema version 99 is newer"):
        State.open(path)


@pytest.mark.parametrize(
    "content",
    [b"this is not sqlite at all\n" * 200, b"SQLite format 3\x00" + b"\xff" * 4000],
    ids=["text", "bad-header"],
)
def test_corrupt_file_raises_and_is_left_untouched(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(content)
    with pytest.raises(StateError, match=str(path)):
        State.open(path)
    assert path.read_bytes() == content


def test_foreign_sqlite_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (id INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(StateError, match="not a hubmirror state database"):
        State.open(path)


HOLD_LOCK = """
    import sys
    from hubmirror.state import State
    st = State.open(sys.argv[1])
    with st.lock():
        print("locked", flush=True)
        sys.stdin.readline()  # hold until told (or killed)
    print("released", flush=True)
"""


def test_lock_held_by_another_process_then_released_by_sigkill(where: str) -> None:
    path = where
    child = spawn(HOLD_LOCK, str(path))
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "locked"
        with State.open(path) as st:
            with pytest.raises(StateLocked, match=rf"pid {child.pid}\b") as exc, st.lock():
                pass
            assert st.where in str(exc.value)
            secret = _password(where)
            assert secret is None or secret not in str(exc.value)
            child.send_signal(signal.SIGKILL)
            child.wait()
            # No stale lock after kill -9: the kernel drops the file lock, PostgreSQL the dead session's lock.
            deadline = time.monotonic() + 30
            while True:
                try:
                    with st.lock():
                        break
                except StateLocked:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            with st.lock():
                rec = st.record_tag(REPO, "x", source_ref="docker.io/library/python:x", upstream_digest=D1)
                assert rec.tag == "x"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_lock_is_exclusive_within_one_process_and_reentrant(where: str) -> None:
    path = where
    with State.open(path) as a, State.open(path) as b:
        with a.lock():
            with a.lock():  # re-entrant on the same State
                pass
            with pytest.raises(StateLocked, match=f"pid {os.getpid()}"), b.lock():
                pass
        with b.lock():  # released when a's outer block ended
            pass


def test_lock_released_cleanly_lets_next_sync_in(where: str) -> None:
    path = where
    child = spawn(HOLD_LOCK, str(path))
    assert child.stdout is not None and child.stdin is not None
    assert child.stdout.readline().strip() == "locked"
    child.stdin.write("go\n")
    child.stdin.flush()
    assert child.stdout.readline().strip() == "released"
    with State.open(path) as st, st.lock():
        assert st.runs() == []
    child.wait()


WRITER = """
    import sys
    from hubmirror.state import State
    st = State.open(sys.argv[1])
    with st.lock():
        run = st.begin_run("c1")
        for i in range(1_000_000):
            digest = "sha256:" + format(i, "064x")
            st.record_tag("r/mirror/busy", f"t{i:07d}", source_ref=f"docker.io/library/busy:t{i:07d}",
                          upstream_digest=digest, run_id=run)
            if i % 10 == 0:
                st.defer(f"docker.io/library/busy:d{i}", "r/mirror/busy", [f"d{i}"], "budget")
            print(i, flush=True)
"""


def test_kill_minus_9_mid_run_keeps_complete_rows(where: str) -> None:
    path = where
    child = spawn(WRITER, str(path))
    assert child.stdout is not None
    last = -1
    while last < 300:
        last = int(child.stdout.readline())
    child.send_signal(signal.SIGKILL)
    child.wait()
    # Everything the writer acknowledged before it died is still in the pipe.
    for line in child.stdout:
        last = int(line)

    deadline = time.monotonic() + 30  # PostgreSQL ends the dead session (and its lock) when it notices
    while True:
        try:
            with State.open(path) as st, st.lock():
                break
        except StateLocked:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    with State.open(path) as st, st.lock():  # lock free again, file consistent
        if st.path is not None:
            assert st._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = st.tags("r/mirror/busy")
        # Every tag acknowledged before the kill is there; at most the in-flight one beyond it.
        assert last + 1 <= len(rows) <= last + 2
        for i, rec in enumerate(rows):
            assert rec.tag == f"t{i:07d}"
            assert rec.source_ref == f"docker.io/library/busy:t{i:07d}"
            assert rec.upstream_digest == rec.dest_digest == "sha256:" + format(i, "064x")
        # Deferrals are written after their tag: the kill may have fallen between the two.
        expected = (len(rows) + 9) // 10
        assert len(st.deferred()) in (expected, expected - 1)
        [run] = st.runs()
        assert run.status == "running" and run.finished is None
        st.begin_run()
        assert st.runs()[1].status == "interrupted"


async def test_usable_from_threads_via_to_thread(where: str) -> None:
    with State.open(where) as st:
        await asyncio.gather(
            *(
                asyncio.to_thread(
                    st.record_tag, REPO, f"t{i}", source_ref=f"docker.io/library/python:t{i}", upstream_digest=D1
                )
                for i in range(40)
            )
        )
        assert len(await asyncio.to_thread(st.tags, REPO)) == 40
