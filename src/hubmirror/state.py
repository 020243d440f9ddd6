"""The sync's state database: what each destination tag holds, runs, deferred work, and a lock.

One SQLite file (stdlib ``sqlite3``, WAL mode). Every write is its own short transaction, committed
before the call returns, so a process killed at any moment loses at most the item it was writing.
A second sync on the same state is stopped by `State.lock` (an OS file lock on ``<path>.lock``, which
the kernel releases when the holder dies, so ``kill -9`` never leaves a stale lock).

Calls block, but each is small. Synchronous code (``hubmirror status``) calls `State` directly; async code
(the sync) goes through `State.aio`, an `AsyncState` that runs every call on the state's own worker
thread, so SQLite (a busy lock held by another process, an fsync) never stalls the event loop. One `State`
may be shared by threads (calls are serialised).

Schema versions: 1 had ``runs``, ``meta`` and ``tags``; 2 added ``tags.created_by_hubmirror`` and the
``deferred`` table; 3 added ``tags.platforms``, the platform selection each tag was copied with; 4 added
``pending_manifests`` (source manifests of unfinished copies); 5 is reserved (job ownership, another
change); 6 added ``tag_intents``: a row per destination tag about to be pushed, written before the PUT and
turned into the tag's record after it (`intend_tag`, `confirm_tag`), so that a crash between a push and its
record never leaves a tag hubmirror wrote unrecorded (the next run settles what is left: `intents`).
`State.open` migrates older files in place, one transaction per step.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Final, ParamSpec, TypeVar

from ._errors import StateError, StateLocked
from ._fs import output_problem

P = ParamSpec("P")
T = TypeVar("T")

SCHEMA_VERSION: Final = 6

#: Statuses a run can have. ``running`` rows left by a killed sync become ``interrupted`` at the next run.
RUN_STATUSES: Final = frozenset({"running", "completed", "deferred", "failed", "interrupted"})

_V1 = """
CREATE TABLE runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started TEXT NOT NULL,
    finished TEXT,
    status TEXT NOT NULL,
    "commit" TEXT,
    summary TEXT
);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE tags (
    dest_repo TEXT NOT NULL,
    tag TEXT NOT NULL,
    source_ref TEXT NOT NULL,
    upstream_digest TEXT NOT NULL,
    dest_digest TEXT NOT NULL,
    synced_at TEXT NOT NULL,
    run_id INTEGER,
    PRIMARY KEY (dest_repo, tag)
);
"""

# Rows written by v1 were all tags hubmirror pushed, so they default to created_by_hubmirror = 1.
_V2 = """
ALTER TABLE tags ADD COLUMN created_by_hubmirror INTEGER NOT NULL DEFAULT 1;
CREATE TABLE deferred (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source_ref TEXT NOT NULL,
    dest_repo TEXT NOT NULL,
    tags TEXT NOT NULL,
    reason TEXT NOT NULL,
    since TEXT NOT NULL,
    UNIQUE (source_ref, dest_repo)
);
CREATE INDEX tags_source_ref ON tags (source_ref);
"""

# NULL: the selection is unknown (a v2 row). A row whose destination digest is the upstream digest was copied
# verbatim, which is what the empty selection ("all platforms") means.
_V3 = """
ALTER TABLE tags ADD COLUMN platforms TEXT;
UPDATE tags SET platforms = '' WHERE dest_digest = upstream_digest;
"""

# Manifests fetched from the source whose copy is not finished (an index bigger than a quota window): the
# next run uses these bytes instead of spending another pull on them.
_V4 = """
CREATE TABLE pending_manifests (
    digest TEXT PRIMARY KEY,
    media_type TEXT NOT NULL,
    data BLOB NOT NULL,
    since TEXT NOT NULL
);
"""

# Reserved for job ownership (another change takes version 5; the numbers are settled when both are merged).
_V5 = ""

# Tags about to be pushed: written before the PUT of a tag, turned into its `tags` row after it. One left
# over (the process died between the two) is settled by the next run: recorded when the destination tag
# holds the intended digest, dropped when it does not.
_V6 = """
CREATE TABLE tag_intents (
    dest_repo TEXT NOT NULL,
    tag TEXT NOT NULL,
    dest_digest TEXT NOT NULL,
    source_ref TEXT NOT NULL,
    upstream_digest TEXT NOT NULL,
    platforms TEXT,
    created_by_hubmirror INTEGER NOT NULL,
    run_id INTEGER,
    since TEXT NOT NULL,
    PRIMARY KEY (dest_repo, tag, dest_digest)
);
"""

_MIGRATIONS: Final[dict[int, str]] = {1: _V1, 2: _V2, 3: _V3, 4: _V4, 5: _V5, 6: _V6}

_LIBRARY_COMMIT_KEY = "library_commit:"


def _now() -> datetime:
    return datetime.now(UTC)


def _to_text(when: datetime) -> str:
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).isoformat(timespec="microseconds")


def _from_text(text: str) -> datetime:
    return datetime.fromisoformat(text)


@dataclass(frozen=True)
class TagRecord:
    """What hubmirror knows about one destination tag.

    *dest_repo* is the destination repository as the sync names it (e.g. ``registry:5000/mirror/python``);
    *source_ref* the full source reference (``docker.io/library/python:3.12``). *upstream_digest* is what
    the source tag pointed at when copied, *dest_digest* what the destination tag was set to (equal when
    copied verbatim). *created_by_hubmirror* is False for tags that existed before hubmirror first saw them:
    prune never deletes those. *platforms* is the platform selection the tag was copied with: ``""`` for
    every platform (the index verbatim), else the selected platforms, sorted and comma-separated
    (``linux/amd64,linux/arm64/v8``); None when unknown (recorded by a hubmirror before schema 3).
    """

    dest_repo: str
    tag: str
    source_ref: str
    upstream_digest: str
    dest_digest: str
    synced_at: datetime
    run_id: int | None = None
    created_by_hubmirror: bool = True
    platforms: str | None = ""


@dataclass(frozen=True)
class DeferredItem:
    """Work a run could not do (budget spent, quota 429); the next run takes these first."""

    id: int
    source_ref: str
    dest_repo: str
    tags: tuple[str, ...]
    reason: str
    since: datetime


@dataclass(frozen=True)
class RunRecord:
    """One sync run. *summary* is whatever the sync stored at the end (report totals)."""

    id: int
    started: datetime
    finished: datetime | None
    status: str
    commit: str | None
    summary: dict[str, Any] = field(default_factory=dict)


class _FileLock:
    """A non-blocking ``flock`` on *path*; the file holds the holder's pid for the error message."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _read_pid(fd)
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                who = f"pid {holder}" if holder else "another process"
                raise StateLocked(f"{self.path}: another hubmirror sync ({who}) is using this state") from None
            raise StateError(f"{self.path}: cannot lock: {e.strerror}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


class State:
    """An open state database. Create with `State.open`; use as a context manager to close it."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn
        self._mutex = threading.RLock()
        self._lock_depth = 0
        self._file_lock = _FileLock(path.with_name(path.name + ".lock"))
        self._executor: ThreadPoolExecutor | None = None
        self.aio = AsyncState(self)

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> State:
        """Open *path*, creating it (and its directory) or migrating an older schema.

        Raises `StateError` naming the path if the file is not a usable state database; the file is
        then left exactly as it was.
        """
        p = Path(path).expanduser()
        problem = output_problem(p)
        if problem is not None:
            raise StateError(f"{p}: cannot use as the state database: {problem}")
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StateError(f"{p}: cannot create directory {p.parent}: {e.strerror}") from None
        if p.is_dir():
            raise StateError(f"{p}: is a directory, not a state database")
        try:
            conn = sqlite3.connect(p, isolation_level=None, check_same_thread=False, timeout=10.0)
        except sqlite3.Error as e:
            raise StateError(f"{p}: cannot open state database: {e}") from None
        state = cls(p, conn)
        try:
            state._setup()
        except BaseException:
            conn.close()
            raise
        return state

    def _setup(self) -> None:
        with self._guard("open"):
            # Read something first: a file that is not SQLite fails here, before any write.
            tables = {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            version = self._version(tables)
            if version > SCHEMA_VERSION:
                raise StateError(
                    f"{self.path}: state schema version {version} is newer than this hubmirror "
                    f"understands ({SCHEMA_VERSION}); upgrade hubmirror"
                )
            mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StateError(f"{self.path}: cannot switch the state database to WAL mode (got {mode})")
            # NORMAL in WAL mode: a committed transaction survives a killed process; only an OS crash or
            # power cut can lose the last few commits, and the file stays consistent either way.
            self._conn.execute("PRAGMA synchronous = NORMAL")
            self._conn.execute("PRAGMA foreign_keys = ON")
            while version < SCHEMA_VERSION:
                with self._write():
                    # Re-read inside the transaction: another process may have migrated meanwhile.
                    tables = {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                    version = self._version(tables)
                    if version >= SCHEMA_VERSION:
                        break
                    step = version + 1
                    for statement in _split_sql(_MIGRATIONS[step]):
                        self._conn.execute(statement)
                    if step == 1:
                        self._conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
                        self._conn.execute("INSERT INTO schema_version (version) VALUES (1)")
                    else:
                        self._conn.execute("UPDATE schema_version SET version = ?", (step,))
                    version = step

    def _version(self, tables: set[str]) -> int:
        if "schema_version" not in tables:
            if tables:
                raise StateError(
                    f"{self.path}: not a hubmirror state database (it has tables {', '.join(sorted(tables))} "
                    "but no schema_version); left untouched"
                )
            return 0
        row = self._conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
        if row is None or row[0] is None:
            raise StateError(f"{self.path}: schema_version table is empty; left untouched")
        return int(row[0])

    @property
    def schema_version(self) -> int:
        with self._guard("read schema version"):
            return int(self._conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0])

    def close(self) -> None:
        """Release the lock if held and close the database. Safe to call twice."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)  # writes in flight finish (each is one short transaction)
            self._executor = None
        with self._mutex:
            self._file_lock.release()
            self._lock_depth = 0
            self._conn.close()

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(*args, **kwargs)`` on this state's worker thread (one thread: calls keep their order)."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="hubmirror-state")
        return await asyncio.get_running_loop().run_in_executor(self._executor, partial(fn, *args, **kwargs))

    def __enter__(self) -> State:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"State({str(self.path)!r})"

    # ------------------------------------------------------------------ plumbing

    @contextlib.contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        """Serialise access and turn sqlite errors into `StateError` naming the file."""
        with self._mutex:
            try:
                yield
            except sqlite3.DatabaseError as e:
                detail = str(e)
                if "not a database" in detail or "malformed" in detail or "corrupt" in detail:
                    raise StateError(
                        f"{self.path}: state database is corrupt ({detail}) during {what}; the file was left "
                        "untouched: move it away to start afresh"
                    ) from None
                raise StateError(f"{self.path}: {what} failed: {detail}") from None
            except sqlite3.Error as e:
                raise StateError(f"{self.path}: {what} failed: {e}") from None

    @contextlib.contextmanager
    def _write(self) -> Iterator[None]:
        """One short write transaction (the caller holds ``_guard``)."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    # ------------------------------------------------------------------ lock

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the sync lock on this state for the ``with`` block.

        Raises `StateLocked` (naming the holder's pid) at once if another process holds it. The kernel
        drops the lock when the holding process dies, however it dies. Re-entrant within one `State`.
        """
        with self._mutex:
            if self._lock_depth == 0:
                self._file_lock.acquire()
            self._lock_depth += 1
        try:
            yield
        finally:
            with self._mutex:
                self._lock_depth -= 1
                if self._lock_depth == 0:
                    self._file_lock.release()

    # ------------------------------------------------------------------ tags

    def record_tag(
        self,
        dest_repo: str,
        tag: str,
        *,
        source_ref: str,
        upstream_digest: str,
        dest_digest: str | None = None,
        run_id: int | None = None,
        created: bool = True,
        synced_at: datetime | None = None,
        platforms: str | None = "",
    ) -> TagRecord:
        """Record that *dest_repo:tag* now holds *dest_digest* (default: *upstream_digest*); committed on return.

        Call it as soon as the tag is pushed (or found already right). *created* is False when the tag was
        already at the destination before hubmirror touched it; a row keeps the *created* value of its
        first recording, so a tag that predates hubmirror is never pruned.
        """
        rec = TagRecord(
            dest_repo=dest_repo,
            tag=tag,
            source_ref=source_ref,
            upstream_digest=upstream_digest,
            dest_digest=dest_digest or upstream_digest,
            synced_at=synced_at or _now(),
            run_id=run_id,
            created_by_hubmirror=created,
            platforms=platforms,
        )
        self.record_tags([rec])
        return self.tag(dest_repo, tag) or rec

    def record_tags(self, records: Iterable[TagRecord]) -> None:
        """Record several tags in one transaction (e.g. marking a batch up to date)."""
        rows = [
            (
                r.dest_repo,
                r.tag,
                r.source_ref,
                r.upstream_digest,
                r.dest_digest,
                _to_text(r.synced_at),
                r.run_id,
                int(r.created_by_hubmirror),
                r.platforms,
            )
            for r in records
        ]
        if not rows:
            return
        with self._guard("record tag"), self._write():
            self._record_rows(rows)

    def _record_rows(self, rows: list[tuple[Any, ...]]) -> None:
        """Upsert `tags` rows (inside a transaction); an intent for the same tag and digest is done with."""
        self._conn.executemany(
            """
            INSERT INTO tags (dest_repo, tag, source_ref, upstream_digest, dest_digest, synced_at, run_id,
                              created_by_hubmirror, platforms)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (dest_repo, tag) DO UPDATE SET
                source_ref = excluded.source_ref,
                upstream_digest = excluded.upstream_digest,
                dest_digest = excluded.dest_digest,
                synced_at = excluded.synced_at,
                run_id = excluded.run_id,
                platforms = excluded.platforms
            """,
            rows,
        )
        self._conn.executemany(
            "DELETE FROM tag_intents WHERE dest_repo = ? AND tag = ? AND dest_digest = ?",
            [(r[0], r[1], r[4]) for r in rows],
        )

    # ------------------------------------------------------------------ tags about to be pushed

    def intend_tag(self, record: TagRecord) -> None:
        """Say, before pushing it, that *record*'s tag is about to be set to its ``dest_digest``; committed on
        return. `confirm_tag` (or `record_tags`) turns it into the tag's record once the push is done."""
        with self._guard("record tag intent"), self._write():
            self._conn.execute(
                """
                INSERT INTO tag_intents (dest_repo, tag, dest_digest, source_ref, upstream_digest, platforms,
                                         created_by_hubmirror, run_id, since)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (dest_repo, tag, dest_digest) DO UPDATE SET
                    source_ref = excluded.source_ref,
                    upstream_digest = excluded.upstream_digest,
                    platforms = excluded.platforms,
                    created_by_hubmirror = excluded.created_by_hubmirror,
                    run_id = excluded.run_id,
                    since = excluded.since
                """,
                (
                    record.dest_repo,
                    record.tag,
                    record.dest_digest,
                    record.source_ref,
                    record.upstream_digest,
                    record.platforms,
                    int(record.created_by_hubmirror),
                    record.run_id,
                    _to_text(record.synced_at),
                ),
            )

    def confirm_tag(self, record: TagRecord) -> None:
        """The tag of an `intend_tag` was pushed: record it and forget the intent, in one transaction."""
        self.record_tags([record])

    def intents(self, prefix: str | None = None) -> list[TagRecord]:
        """Tags whose push was begun and never confirmed (of the repositories whose name starts with
        *prefix*), as the records they would become; ``synced_at`` is when the push was begun."""
        sql = f"SELECT {_INTENT_COLUMNS} FROM tag_intents"
        args: list[str | int] = []
        if prefix is not None:
            sql += " WHERE substr(dest_repo, 1, ?) = ?"
            args += [len(prefix), prefix]
        with self._guard("read tag intents"):
            rows = self._conn.execute(sql + " ORDER BY dest_repo, tag, since", args).fetchall()
        return [_tag_record(r) for r in rows]

    def drop_intent(self, dest_repo: str, tag: str, dest_digest: str) -> bool:
        """Forget an intent whose tag does not hold its digest (the push never happened); True if there was one."""
        with self._guard("drop tag intent"), self._write():
            cur = self._conn.execute(
                "DELETE FROM tag_intents WHERE dest_repo = ? AND tag = ? AND dest_digest = ?",
                (dest_repo, tag, dest_digest),
            )
            return cur.rowcount > 0

    def tag(self, dest_repo: str, tag: str) -> TagRecord | None:
        """The record of *dest_repo:tag*, or None if hubmirror never recorded it."""
        with self._guard("read tag"):
            row = self._conn.execute(
                f"SELECT {_TAG_COLUMNS} FROM tags WHERE dest_repo = ? AND tag = ?", (dest_repo, tag)
            ).fetchone()
        return _tag_record(row) if row else None

    def tags(
        self, dest_repo: str | None = None, *, source_ref: str | None = None, prefix: str | None = None
    ) -> list[TagRecord]:
        """All recorded tags (of one destination repository, from one source reference, or of the
        repositories whose name starts with *prefix*), sorted."""
        where: list[str] = []
        args: list[str | int] = []
        if dest_repo is not None:
            where.append("dest_repo = ?")
            args.append(dest_repo)
        if prefix is not None:
            where.append("substr(dest_repo, 1, ?) = ?")
            args += [len(prefix), prefix]
        if source_ref is not None:
            where.append("source_ref = ?")
            args.append(source_ref)
        sql = f"SELECT {_TAG_COLUMNS} FROM tags"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY dest_repo, tag"
        with self._guard("read tags"):
            rows = self._conn.execute(sql, args).fetchall()
        return [_tag_record(r) for r in rows]

    def dest_repos(self) -> list[str]:
        """Every destination repository with at least one recorded tag."""
        with self._guard("read repositories"):
            return [r[0] for r in self._conn.execute("SELECT DISTINCT dest_repo FROM tags ORDER BY dest_repo")]

    def forget_tag(self, dest_repo: str, tag: str) -> bool:
        """Drop the record of *dest_repo:tag* (after pruning it); True if there was one."""
        with self._guard("forget tag"), self._write():
            cur = self._conn.execute("DELETE FROM tags WHERE dest_repo = ? AND tag = ?", (dest_repo, tag))
            return cur.rowcount > 0

    # ------------------------------------------------------------------ deferred work

    def defer(self, source_ref: str, dest_repo: str, tags: Sequence[str], reason: str) -> DeferredItem:
        """Remember work not done. Deferring the same source and destination again adds the tags and
        updates the reason but keeps the original *since*."""
        now = _to_text(_now())
        with self._guard("defer"), self._write():
            row = self._conn.execute(
                "SELECT tags FROM deferred WHERE source_ref = ? AND dest_repo = ?", (source_ref, dest_repo)
            ).fetchone()
            merged = list(json.loads(row[0])) if row else []
            merged += [t for t in tags if t not in merged]
            self._conn.execute(
                """
                INSERT INTO deferred (source_ref, dest_repo, tags, reason, since) VALUES (?, ?, ?, ?, ?)
                ON CONFLICT (source_ref, dest_repo) DO UPDATE SET tags = excluded.tags, reason = excluded.reason
                """,
                (source_ref, dest_repo, json.dumps(merged), reason, now),
            )
            out = self._conn.execute(
                f"SELECT {_DEFERRED_COLUMNS} FROM deferred WHERE source_ref = ? AND dest_repo = ?",
                (source_ref, dest_repo),
            ).fetchone()
        return _deferred_item(out)

    def deferred(self) -> list[DeferredItem]:
        """Deferred work, oldest first: the order the next run should take it in."""
        with self._guard("read deferred work"):
            rows = self._conn.execute(f"SELECT {_DEFERRED_COLUMNS} FROM deferred ORDER BY since, id").fetchall()
        return [_deferred_item(r) for r in rows]

    def clear_deferred(self, source_ref: str, dest_repo: str) -> bool:
        """Remove a deferred item once its work is done; True if there was one."""
        with self._guard("clear deferred work"), self._write():
            cur = self._conn.execute(
                "DELETE FROM deferred WHERE source_ref = ? AND dest_repo = ?", (source_ref, dest_repo)
            )
            return cur.rowcount > 0

    # ------------------------------------------------------------------ manifests of unfinished copies

    def keep_manifest(self, digest: str, media_type: str, data: bytes) -> None:
        """Keep the bytes of a source manifest (an index) whose copy is not finished, so that the next run
        does not spend a pull on it again. The caller has verified *data* against *digest*."""
        with self._guard("keep manifest"), self._write():
            self._conn.execute(
                "INSERT INTO pending_manifests (digest, media_type, data, since) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (digest) DO NOTHING",
                (digest, media_type, data, _to_text(_now())),
            )

    def kept_manifest(self, digest: str) -> tuple[str, bytes] | None:
        """(media type, bytes) kept by `keep_manifest` for *digest*, or None."""
        with self._guard("read kept manifest"):
            row = self._conn.execute(
                "SELECT media_type, data FROM pending_manifests WHERE digest = ?", (digest,)
            ).fetchone()
        return (str(row[0]), bytes(row[1])) if row else None

    def drop_manifest(self, digest: str) -> bool:
        """Forget a kept manifest once its copy is done; True if there was one."""
        with self._guard("drop kept manifest"), self._write():
            cur = self._conn.execute("DELETE FROM pending_manifests WHERE digest = ?", (digest,))
            return cur.rowcount > 0

    def keep_manifests(self, manifests: Iterable[tuple[str, str, bytes]]) -> None:
        """`keep_manifest` for several (digest, media type, bytes) in one transaction: the source manifests
        a copy fetched and did not store (its destination failed, its budget ran out)."""
        now = _to_text(_now())
        rows = [(d, mt, data, now) for d, mt, data in manifests]
        if not rows:
            return
        with self._guard("keep manifests"), self._write():
            self._conn.executemany(
                "INSERT INTO pending_manifests (digest, media_type, data, since) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (digest) DO NOTHING",
                rows,
            )

    def drop_manifests(self, digests: Iterable[str] | None = None) -> int:
        """Forget the kept manifests *digests* (None: every one), in one transaction; how many there were."""
        with self._guard("drop kept manifests"), self._write():
            if digests is None:
                return self._conn.execute("DELETE FROM pending_manifests").rowcount
            cur = self._conn.executemany("DELETE FROM pending_manifests WHERE digest = ?", [(d,) for d in digests])
            return cur.rowcount

    # ------------------------------------------------------------------ runs

    def begin_run(self, commit: str | None = None) -> int:
        """Start a run and return its id. Runs still ``running`` (their sync was killed) become
        ``interrupted``; call this while holding `lock`."""
        with self._guard("begin run"), self._write():
            self._conn.execute(
                "UPDATE runs SET status = 'interrupted' WHERE status = 'running'",
            )
            cur = self._conn.execute(
                "INSERT INTO runs (started, status, \"commit\") VALUES (?, 'running', ?)", (_to_text(_now()), commit)
            )
            assert cur.lastrowid is not None
            return int(cur.lastrowid)

    def finish_run(
        self,
        run_id: int,
        status: str,
        summary: Mapping[str, Any] | None = None,
        *,
        commit: str | None = None,
    ) -> None:
        """Close run *run_id* with *status* (``completed``, ``deferred``, ``failed``) and a JSON summary."""
        if status not in RUN_STATUSES or status == "running":
            raise ValueError(f"invalid run status {status!r}")
        text = json.dumps(dict(summary or {}), sort_keys=True, default=str)
        with self._guard("finish run"), self._write():
            cur = self._conn.execute(
                'UPDATE runs SET finished = ?, status = ?, summary = ?, "commit" = COALESCE(?, "commit") WHERE id = ?',
                (_to_text(_now()), status, text, commit, run_id),
            )
            if cur.rowcount == 0:
                raise StateError(f"{self.path}: no run with id {run_id}")

    def runs(self, limit: int = 20) -> list[RunRecord]:
        """The latest *limit* runs, newest first."""
        with self._guard("read runs"):
            rows = self._conn.execute(
                'SELECT id, started, finished, status, "commit", summary FROM runs ORDER BY id DESC LIMIT ?',
                (limit,),
            ).fetchall()
        return [
            RunRecord(
                id=r[0],
                started=_from_text(r[1]),
                finished=_from_text(r[2]) if r[2] else None,
                status=r[3],
                commit=r[4],
                summary=json.loads(r[5]) if r[5] else {},
            )
            for r in rows
        ]

    # ------------------------------------------------------------------ meta

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        with self._guard("read meta"):
            row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row else default

    def set_meta(self, key: str, value: str | None) -> None:
        """Set *key* (None deletes it)."""
        with self._guard("write meta"), self._write():
            if value is None:
                self._conn.execute("DELETE FROM meta WHERE key = ?", (key,))
            else:
                self._conn.execute(
                    "INSERT INTO meta (key, value) VALUES (?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (key, value),
                )

    def library_commit(self, library: str) -> str | None:
        """The official-images commit last synced completely (no deferral) from *library* (its URL/path)."""
        return self.get_meta(_LIBRARY_COMMIT_KEY + library)

    def set_library_commit(self, library: str, commit: str) -> None:
        """Record *commit* as synced; call only when the run did the library part without deferral."""
        self.set_meta(_LIBRARY_COMMIT_KEY + library, commit)

    def library_commits(self) -> dict[str, str]:
        """Every library source → the commit last synced completely from it."""
        with self._guard("read meta"):
            rows = self._conn.execute(
                "SELECT key, value FROM meta WHERE key LIKE ?", (_LIBRARY_COMMIT_KEY + "%",)
            ).fetchall()
        return {k[len(_LIBRARY_COMMIT_KEY) :]: v for k, v in rows if v is not None}

    def overview(self, runs: int = 5) -> dict[str, Any]:
        """What ``hubmirror status`` shows: tags tracked, libraries synced, deferred work, latest runs."""
        tags = self.tags()
        return {
            "state": str(self.path),
            "tags": len(tags),
            "tags_created": sum(1 for t in tags if t.created_by_hubmirror),
            "repositories": len({t.dest_repo for t in tags}),
            "libraries": self.library_commits(),
            "deferred": [
                {
                    "source": d.source_ref,
                    "dest": d.dest_repo,
                    "tags": list(d.tags),
                    "reason": d.reason,
                    "since": _to_text(d.since),
                }
                for d in self.deferred()
            ],
            "runs": [
                {
                    "id": r.id,
                    "started": _to_text(r.started),
                    "finished": _to_text(r.finished) if r.finished else None,
                    "status": r.status,
                    "commit": r.commit,
                    "summary": r.summary,
                }
                for r in self.runs(runs)
            ],
        }


class AsyncState:
    """`State` for the event loop: the same calls, each run on the state's worker thread (`State.run`).

    Only what the sync needs is here; anything else is ``await state.run(state.method, ...)``.
    """

    def __init__(self, state: State) -> None:
        self._state = state

    async def tag(self, dest_repo: str, tag: str) -> TagRecord | None:
        return await self._state.run(self._state.tag, dest_repo, tag)

    async def tags(
        self, dest_repo: str | None = None, *, source_ref: str | None = None, prefix: str | None = None
    ) -> list[TagRecord]:
        return await self._state.run(self._state.tags, dest_repo, source_ref=source_ref, prefix=prefix)

    async def record_tags(self, records: Iterable[TagRecord]) -> None:
        await self._state.run(self._state.record_tags, list(records))

    async def forget_tag(self, dest_repo: str, tag: str) -> bool:
        return await self._state.run(self._state.forget_tag, dest_repo, tag)

    async def defer(self, source_ref: str, dest_repo: str, tags: Sequence[str], reason: str) -> DeferredItem:
        return await self._state.run(self._state.defer, source_ref, dest_repo, list(tags), reason)

    async def deferred(self) -> list[DeferredItem]:
        return await self._state.run(self._state.deferred)

    async def clear_deferred(self, source_ref: str, dest_repo: str) -> bool:
        return await self._state.run(self._state.clear_deferred, source_ref, dest_repo)

    async def begin_run(self, commit: str | None = None) -> int:
        return await self._state.run(self._state.begin_run, commit)

    async def finish_run(
        self, run_id: int, status: str, summary: Mapping[str, Any] | None = None, *, commit: str | None = None
    ) -> None:
        await self._state.run(self._state.finish_run, run_id, status, summary, commit=commit)

    async def library_commit(self, library: str) -> str | None:
        return await self._state.run(self._state.library_commit, library)

    async def set_library_commit(self, library: str, commit: str) -> None:
        await self._state.run(self._state.set_library_commit, library, commit)

    async def keep_manifest(self, digest: str, media_type: str, data: bytes) -> None:
        await self._state.run(self._state.keep_manifest, digest, media_type, data)

    async def kept_manifest(self, digest: str) -> tuple[str, bytes] | None:
        return await self._state.run(self._state.kept_manifest, digest)

    async def drop_manifest(self, digest: str) -> bool:
        return await self._state.run(self._state.drop_manifest, digest)

    async def keep_manifests(self, manifests: Iterable[tuple[str, str, bytes]]) -> None:
        await self._state.run(self._state.keep_manifests, list(manifests))

    async def drop_manifests(self, digests: Iterable[str] | None = None) -> int:
        return await self._state.run(self._state.drop_manifests, None if digests is None else list(digests))

    async def intend_tag(self, record: TagRecord) -> None:
        await self._state.run(self._state.intend_tag, record)

    async def confirm_tag(self, record: TagRecord) -> None:
        await self._state.run(self._state.confirm_tag, record)

    async def intents(self, prefix: str | None = None) -> list[TagRecord]:
        return await self._state.run(self._state.intents, prefix)

    async def drop_intent(self, dest_repo: str, tag: str, dest_digest: str) -> bool:
        return await self._state.run(self._state.drop_intent, dest_repo, tag, dest_digest)


_TAG_COLUMNS = (
    "dest_repo, tag, source_ref, upstream_digest, dest_digest, synced_at, run_id, created_by_hubmirror, platforms"
)
_DEFERRED_COLUMNS = "id, source_ref, dest_repo, tags, reason, since"
#: The columns of `tag_intents` in the order of `_TAG_COLUMNS` (``since`` stands for ``synced_at``).
_INTENT_COLUMNS = (
    "dest_repo, tag, source_ref, upstream_digest, dest_digest, since, run_id, created_by_hubmirror, platforms"
)


def _tag_record(row: Sequence[Any]) -> TagRecord:
    return TagRecord(
        dest_repo=row[0],
        tag=row[1],
        source_ref=row[2],
        upstream_digest=row[3],
        dest_digest=row[4],
        synced_at=_from_text(row[5]),
        run_id=row[6],
        created_by_hubmirror=bool(row[7]),
        platforms=row[8],
    )


def _deferred_item(row: Sequence[Any]) -> DeferredItem:
    return DeferredItem(
        id=row[0],
        source_ref=row[1],
        dest_repo=row[2],
        tags=tuple(json.loads(row[3])),
        reason=row[4],
        since=_from_text(row[5]),
    )


def _split_sql(script: str) -> list[str]:
    """Statements of a migration script (ours: no semicolons inside strings)."""
    return [s.strip() for s in script.split(";") if s.strip()]


__all__ = [
    "RUN_STATUSES",
    "SCHEMA_VERSION",
    "AsyncState",
    "DeferredItem",
    "RunRecord",
    "State",
    "StateError",
    "StateLocked",
    "TagRecord",
]
