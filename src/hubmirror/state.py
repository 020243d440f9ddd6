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
``pending_manifests`` (source manifests of unfinished copies); 5 added ``pending_changes`` (upstream changes
not yet mirrored, for the freshness lag); 6 keys the library commits by the library URL without its
credentials (`hubmirror.redact.redact_url`), where 5 and older used the URL as given, token and all (a SQLite
file is then rebuilt, so that no copy of the old key is left in its free pages or the WAL; PostgreSQL's table
is vacuumed); 7 added ``tag_owners`` (which job owns each tag: prune deletes only the running job's tags),
``runs.job`` and ``deletions`` (what prune deleted: the next run checks that the indexes it keeps still have
every child); 8 added ``tag_intents``: a row per destination tag about to be pushed, written before the PUT and
turned into the tag's record after it (`intend_tag`, `confirm_tag`), so that a crash between a push and its
record never leaves a tag hubmirror wrote unrecorded (the next run settles what is left: `intents`).
9 (the workers block) added ``work_runs``, ``work_units``, ``work_workers`` and ``pull_quota`` (workers
cooperating on one run, and their shared pull quota). 11 (the serve replicas block) added ``serve_triggers``
(runs asked of ``hubmirror serve`` replicas, which the one that schedules takes) and ``serve_deliveries`` (the
webhook deliveries they accepted). 12 added ``pull_quota_workers``, the pulls each worker took from a shared
quota and has not settled (a dead worker's count as spent). `State.open` migrates older files in place, one
transaction per step.

Two backends, one `State`: SQLite (a path, or ``sqlite:///PATH``; the default) and PostgreSQL
(``postgresql://USER@HOST:PORT/DB``, a libpq URL: the password comes from the URL, ``PGPASSWORD`` or
``~/.pgpass`` and is never printed). Every method is written once in the SQL both understand; the PostgreSQL
connection (`_PgConnection`, psycopg 3, imported only for such a state) takes SQLite's ``?`` placeholders,
and the migrations are translated (`_pg_ddl`). The sync lock is an advisory lock there, but the sync does not
take it: several syncs cooperate on one run instead (`join_run`, `claim_unit`, `take_pulls`;
``hubmirror.sync.worker``). A lost connection (the server restarted or stopped) is opened again and the call
made again by `State.run`, up to `State.reconnect_window`; then `StateUnavailable`.

**Jobs.** Several sync jobs may share one state (the default state is one file per user). Each recorded tag
is owned by the jobs that select it (`tag_owners`, a relation tag ↔ job); a `State` opened with *job* claims
every tag it records for that job in the same transaction. A tag recorded before schema 7 has no owner until
a job that selects it claims it (`claim_tags`); prune never deletes a tag its job does not own.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import socket
import sqlite3
import threading
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, ParamSpec, Protocol, TypeVar

from ._errors import StateError, StateLocked, StateUnavailable
from ._fs import output_problem
from .redact import redact_url

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

SCHEMA_VERSION: Final = 12

#: How long (seconds) a call through `State.run` waits for a lost PostgreSQL connection to come back before
#: it gives up with `StateUnavailable` (`State.reconnect_window`; workers use twice their lease).
RECONNECT_WINDOW: Final = 60.0

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

# Upstream changes not yet at the destination, per tag: since when (the earliest upstream change time known)
# and why they wait. A row goes when the destination holds the new digest; its age is the tag's lag.
_V5 = """
CREATE TABLE pending_changes (
    dest_repo TEXT NOT NULL,
    tag TEXT NOT NULL,
    upstream_digest TEXT NOT NULL,
    changed_at TEXT NOT NULL,
    seen_at TEXT NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (dest_repo, tag)
);
"""

# Jobs: which job owns each tag (a tag selected by several jobs has several rows), the job of each run, and
# a log of what prune deleted (a deletion makes the next run check the children of the indexes it keeps).
# Tags recorded before have no owner: the first run of a job that selects one claims it.
_V7 = """
CREATE TABLE tag_owners (
    dest_repo TEXT NOT NULL,
    tag TEXT NOT NULL,
    job TEXT NOT NULL,
    since TEXT NOT NULL,
    PRIMARY KEY (dest_repo, tag, job)
);
CREATE INDEX tag_owners_job ON tag_owners (job);
ALTER TABLE runs ADD COLUMN job TEXT;
CREATE TABLE deletions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    dest_repo TEXT NOT NULL,
    tag TEXT NOT NULL,
    digest TEXT NOT NULL,
    how TEXT NOT NULL,
    job TEXT,
    run_id INTEGER,
    at TEXT NOT NULL
);
CREATE INDEX deletions_repo ON deletions (dest_repo);
"""

# Tags about to be pushed: written before the PUT of a tag, turned into its `tags` row after it. One left
# over (the process died between the two) is settled by the next run: recorded when the destination tag
# holds the intended digest, dropped when it does not.
_V8 = """
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


# ---------------------------------------------------------------------------------------------------------
# Workers (issue 15 items 2-3): several syncs cooperating on one run of a PostgreSQL state, and the pull
# quota they share. A block of its own (the lead renumbers it at merge): `work_runs` is the run the workers
# of one job share (``open`` → ``closing`` by the last worker → ``closed``; ``abandoned`` when every worker
# died); `work_units` its destination repositories, each claimed by one worker at a time under a lease
# (seconds since the epoch, renewed by heartbeat); `work_workers` each worker's lease and the summary of
# what it did (JSON); `pull_quota` one row per quota (source registry and account or egress): the pulls
# workers may still take (NULL: unknown until a worker reads the quota) and those taken and not yet settled.
_WORKERS = """
CREATE TABLE work_runs (
    run_id INTEGER PRIMARY KEY,
    job TEXT NOT NULL,
    status TEXT NOT NULL,
    closer TEXT,
    started TEXT NOT NULL
);
CREATE INDEX work_runs_job ON work_runs (job, status);
CREATE TABLE work_units (
    run_id INTEGER NOT NULL,
    dest_repo TEXT NOT NULL,
    position INTEGER NOT NULL,
    status TEXT NOT NULL,
    worker TEXT,
    lease_until DOUBLE PRECISION,
    attempts INTEGER NOT NULL DEFAULT 0,
    blockers TEXT,
    PRIMARY KEY (run_id, dest_repo)
);
CREATE TABLE work_workers (
    run_id INTEGER NOT NULL,
    worker TEXT NOT NULL,
    status TEXT NOT NULL,
    lease_until DOUBLE PRECISION NOT NULL,
    summary TEXT,
    PRIMARY KEY (run_id, worker)
);
CREATE TABLE pull_quota (
    quota_key TEXT PRIMARY KEY,
    available INTEGER,
    outstanding INTEGER NOT NULL DEFAULT 0,
    settled_at DOUBLE PRECISION NOT NULL,
    updated_at TEXT NOT NULL
);
"""
# ---------------------------------------------------------------------------------------------------------

# Blobs of a run shared by workers (issue 15 item 2): `work_blobs` has one row per (run, blob, destination
# repository) a worker placed the blob in during the run (``lease_until`` NULL), or is transferring it into
# (``lease_until``: the claim's lease, epoch seconds, renewed with the worker's other leases). Other workers
# mount the blob from a repository that holds it, or wait while one transfers it, instead of downloading it
# again. Rows live as long as their run (`State.end_run`, or the next run of any job once it is over).
_WORK_BLOBS = """
CREATE TABLE work_blobs (
    run_id INTEGER NOT NULL,
    digest TEXT NOT NULL,
    dest_repo TEXT NOT NULL,
    worker TEXT NOT NULL,
    lease_until DOUBLE PRECISION,
    PRIMARY KEY (run_id, digest, dest_repo)
);
CREATE INDEX work_blobs_in_flight ON work_blobs (run_id, worker) WHERE lease_until IS NOT NULL;
"""


# ---------------------------------------------------------------------------------------------------------
# Serve replicas (issue 15 item 5): several ``hubmirror serve`` on one PostgreSQL state elect one scheduler (a
# session advisory lock, `lead_scheduler`); a trigger any replica accepts (API, webhook) is a row of
# `serve_triggers` until the scheduler takes it for its next run (`take_triggers`), so none is lost when the
# scheduler dies. Triggers of the same reason and repositories are one row (``triggers`` counts them).
# `serve_deliveries` remembers the webhook deliveries any replica accepted (the newest few thousand), so that
# GitHub's retry of one reaching another replica starts nothing.
_SERVE_TRIGGERS = """
CREATE TABLE serve_triggers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job TEXT NOT NULL,
    reason TEXT NOT NULL,
    repositories TEXT,
    triggers INTEGER NOT NULL DEFAULT 1,
    replica TEXT NOT NULL,
    created TEXT NOT NULL
);
CREATE INDEX serve_triggers_job ON serve_triggers (job, id);
CREATE TABLE serve_deliveries (
    job TEXT NOT NULL,
    delivery TEXT NOT NULL,
    seen TEXT NOT NULL,
    PRIMARY KEY (job, delivery)
);
CREATE INDEX serve_deliveries_seen ON serve_deliveries (job, seen);
"""
#: Rows of `serve_triggers` one job keeps at most (distinct reasons and repositories): beyond, a trigger is
#: refused (`add_trigger` returns None) until the scheduler takes them.
MAX_PENDING_TRIGGERS: Final = 1000
# ---------------------------------------------------------------------------------------------------------

# The pulls each worker took from a shared quota and has not settled (issue 15 item 3): one row per (quota,
# worker), with the run whose lease (`work_workers`) says whether the worker is alive. A dead worker's pulls are
# spent once a ``ratelimit-remaining`` received after its lease ran out counts them (`State.take_pulls`).
# ``pull_quota.outstanding`` is no longer used.
_PULL_QUOTA_WORKERS = """
CREATE TABLE pull_quota_workers (
    quota_key TEXT NOT NULL,
    worker TEXT NOT NULL,
    run_id INTEGER NOT NULL,
    outstanding INTEGER NOT NULL,
    PRIMARY KEY (quota_key, worker)
);
"""


_LIBRARY_COMMIT_KEY = "library_commit:"
_CHILDREN_CHECKED_KEY = "children_checked:"
#: The deletions log keeps this many rows (the newest).
DELETIONS_KEPT: Final = 10_000


def _v6(conn: _Conn) -> bool:
    """Library commits keyed by the library URL as given (``http://user:TOKEN@host/…``) are keyed by the URL
    without its credentials, as `State.library_commit` now looks them up. True if a key changed."""
    k = _LIBRARY_COMMIT_KEY
    changed = False
    for key, value in conn.execute("SELECT key, value FROM meta").fetchall():  # a handful of rows
        key = str(key)
        if not key.startswith(k) or (safe := k + redact_url(key[len(k) :])) == key:
            continue
        conn.execute("DELETE FROM meta WHERE key = ?", (key,))
        conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING", (safe, value))
        changed = True
    return changed


#: Each step: an SQL script, or a function of the connection (in the step's transaction) that returns True
#: if the database must then be rebuilt (`State._purge`) because it removed something that must not linger.
_MIGRATIONS: Final[dict[int, str | Callable[[_Conn], bool]]] = {
    1: _V1,
    2: _V2,
    3: _V3,
    4: _V4,
    5: _V5,
    6: _v6,
    7: _V7,
    8: _V8,
    9: _WORKERS,  # the workers block (issue 15 items 2-3)
    10: _WORK_BLOBS,  # blobs in flight between workers (issue 15 item 2)
    11: _SERVE_TRIGGERS,  # the serve replicas block (issue 15 item 5)
    12: _PULL_QUOTA_WORKERS,  # the pulls out, per worker of the shared quota (issue 15 item 3)
}

#: The PostgreSQL advisory lock keys: the sync lock (one run at a time) and migrations.
_PG_SYNC_LOCK: Final = 0x68756273  # "hubs"
_PG_MIGRATE_LOCK: Final = 0x6875626D  # "hubm"
_PG_JOIN_LOCK: Final = 0x6875626A  # "hubj": workers joining or starting a run, one at a time
#: With a blob's hash as the second key (the two-key space, apart from the keys above): claims of one blob.
_PG_BLOB_LOCK: Final = 0x68756262  # "hubb"
#: The serve scheduler's lock: this (``classid``) and the CRC-32 of the job (``objid``), one scheduler per job.
_PG_SERVE_LOCK: Final = 0x68756272  # "hubr"
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_PG_SCHEMES: Final = ("postgresql", "postgres")


@dataclass(frozen=True)
class StateLocation:
    """Where a state lives: a SQLite file (*path*) or a PostgreSQL database (*url*, a libpq URL)."""

    kind: Literal["sqlite", "postgresql"]
    path: Path | None = None
    url: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, value: str | os.PathLike[str]) -> StateLocation:
        """A path or ``sqlite:///PATH`` (SQLite), or ``postgresql://…`` (PostgreSQL); any other scheme is a
        `StateError` in one line."""
        if isinstance(value, os.PathLike):
            return cls("sqlite", Path(value).expanduser())
        text = value.strip()
        m = _SCHEME.match(text)
        if m is None:
            return cls("sqlite", Path(text).expanduser())
        scheme = m.group(1).lower()
        if scheme == "sqlite":
            rest = text[m.end() :]
            if not rest.strip("/"):
                raise StateError(f"{text}: sqlite:/// needs a path, e.g. sqlite:///var/lib/hubmirror/state.db")
            return cls("sqlite", Path("/" + rest.lstrip("/")) if rest.startswith("/") else Path(rest))
        if scheme in _PG_SCHEMES:
            return cls("postgresql", url=text)
        raise StateError(
            f"{redact_dsn(text)}: unknown state scheme {scheme!r}: give a path, sqlite:///PATH or "
            "postgresql://USER@HOST:PORT/DB"
        )

    def __str__(self) -> str:
        return str(self.path) if self.kind == "sqlite" else redact_dsn(self.url or "")


def redact_dsn(url: str) -> str:
    """*url* without a password (``postgresql://user:secret@h/db`` → ``postgresql://user@h/db``) and without
    a ``password=`` query parameter."""
    out = re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^/@:]*)(:[^/@]*)?@", r"\1\2@", url)
    return re.sub(r"([?&]password=)[^&]*", r"\1***", out, flags=re.IGNORECASE)


class _Cursor(Protocol):
    """What `State` uses of a cursor (sqlite3's and psycopg's alike)."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class _Conn(Protocol):
    """What `State` uses of a connection: `sqlite3.Connection`, or `_PgConnection`."""

    def execute(self, sql: str, params: Any = (), /) -> _Cursor: ...

    def executemany(self, sql: str, rows: Any, /) -> Any: ...

    def close(self) -> None: ...


class _PgConnection:
    """A psycopg 3 connection (autocommit: transactions are the explicit ``BEGIN``/``COMMIT`` of `State`)
    that speaks SQLite's dialect as `State` writes it: ``?`` placeholders, ``BEGIN IMMEDIATE``, and
    booleans stored as integers. *connect* opens a new session when this one was lost (`reconnect`)."""

    def __init__(self, conn: psycopg.Connection[Any], connect: Callable[[], psycopg.Connection[Any]]) -> None:
        self._conn = conn
        self._connect = connect
        self.lost = False  # a statement failed because the session was lost (`State._guard` says so)
        self.closed_by_us = False

    @property
    def broken(self) -> bool:
        """The session is gone (the server restarted or stopped, the network): `reconnect` before using it."""
        return not self.closed_by_us and (self.lost or self._conn.closed)

    def is_lost(self, e: BaseException) -> bool:
        """*e* (a psycopg error) means the session is gone, not that the statement was wrong: the connection
        broke, or the server ended it (``57P01`` admin shutdown, ``57P02`` crash shutdown, ``57P03`` not
        accepting connections yet, class ``08`` connection exceptions)."""
        if self.closed_by_us:
            return False
        code = str(getattr(e, "sqlstate", None) or "")
        return self._conn.closed or code.startswith("08") or code in ("57P01", "57P02", "57P03")

    def reconnect(self) -> None:
        """A new session in place of the lost one (whose session state, advisory locks included, is gone);
        a psycopg error if the server cannot be reached."""
        with contextlib.suppress(Exception):
            self._conn.close()
        self._conn = self._connect()
        self.lost = False

    def execute(self, sql: str, params: Sequence[Any] = (), /) -> _Cursor:
        return self._conn.execute(_pg_sql(sql), _pg_params(params))

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]], /) -> int:
        """*sql* for each of *rows*, sent together (psycopg pipelines them: one round trip); the rows they
        changed in all."""
        with self._conn.cursor() as cur:
            cur.executemany(_pg_sql(sql), [_pg_params(r) for r in rows])
            return cur.rowcount

    def close(self) -> None:
        self.closed_by_us = True
        self._conn.close()


@lru_cache(maxsize=512)  # `State` sends the same few statements again and again
def _pg_sql(sql: str) -> str:
    """SQLite's statement for PostgreSQL: ``?`` → ``%s`` outside quotes, ``%`` escaped, ``BEGIN IMMEDIATE``
    → ``BEGIN``."""
    if sql.strip().upper() == "BEGIN IMMEDIATE":
        return "BEGIN"
    out: list[str] = []
    quote: str | None = None
    for c in sql:
        if quote is not None:
            out.append("%%" if c == "%" else c)
            if c == quote:
                quote = None
        elif c in "'\"":
            quote = c
            out.append(c)
        elif c == "?":
            out.append("%s")
        elif c == "%":
            out.append("%%")
        else:
            out.append(c)
    return "".join(out)


def _pg_params(params: Sequence[Any]) -> tuple[Any, ...]:
    return tuple(int(p) if isinstance(p, bool) else p for p in params)


def _pg_ddl(script: str) -> str:
    """A migration of ours for PostgreSQL: identity columns and ``bytea``."""
    script = script.replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY")
    return re.sub(r"\bBLOB\b", "BYTEA", script)


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
class PendingChange:
    """An upstream change of one destination tag not yet at the destination: since *changed_at* (the
    earliest upstream change time known, or when hubmirror first saw it), waiting for *reason*."""

    dest_repo: str
    tag: str
    upstream_digest: str
    changed_at: datetime
    seen_at: datetime
    reason: str


@dataclass(frozen=True)
class Deletion:
    """One thing prune deleted: *tag* of *dest_repo*, and *how* (``tag``: the tag alone; ``placeholder``: the
    tag moved to a placeholder that was then deleted; ``digest``: the manifest *digest* with its tags)."""

    dest_repo: str
    tag: str
    digest: str
    how: str
    job: str | None
    run_id: int | None
    at: datetime


@dataclass(frozen=True)
class JobInfo:
    """A job that ran on this state or owns tags in it: what it owns, and its latest run."""

    name: str
    tags: tuple[tuple[str, str], ...]  # (dest_repo, tag) it owns, sorted
    last_run: RunRecord | None = None


@dataclass(frozen=True)
class RunRecord:
    """One sync run. *summary* is whatever the sync stored at the end (report totals)."""

    id: int
    started: datetime
    finished: datetime | None
    status: str
    commit: str | None
    summary: dict[str, Any] = field(default_factory=dict)
    job: str | None = None


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


class _NotAdded(Exception):
    """`State.add_trigger` adds nothing (its transaction is rolled back) and returns *result*."""

    def __init__(self, result: int | None) -> None:
        super().__init__(result)
        self.result = result


class State:
    """An open state database. Create with `State.open`; use as a context manager to close it.

    *job* is the sync job using it (None: no job, e.g. ``hubmirror status``): every tag recorded through this
    `State` is claimed for that job (`tag_owners`), and runs begun are that job's.
    """

    def __init__(
        self, location: StateLocation, conn: sqlite3.Connection | _PgConnection, *, job: str | None = None
    ) -> None:
        self._conn: _Conn
        self.location = location
        self.job = job
        #: The SQLite file (None for PostgreSQL).
        self.path = location.path
        #: How messages name this state: the file, or the PostgreSQL URL without its password.
        self.where = str(location)
        self._conn = conn
        self._pg = isinstance(conn, _PgConnection)
        self._mutex = threading.RLock()
        self._lock_depth = 0
        #: PostgreSQL: how long (seconds) a call through `run` waits for a lost connection to come back
        #: (reconnecting with backoff) before it raises `StateUnavailable`.
        self.reconnect_window = RECONNECT_WINDOW
        self._down_since: float | None = None  # monotonic time the connection was found lost, until back
        self._depth = 0  # nested `_guard` blocks: only the outermost reconnects (never mid-transaction)
        self._file_lock = _FileLock(self.path.with_name(self.path.name + ".lock")) if self.path is not None else None
        self._executor: ThreadPoolExecutor | None = None
        self.aio = AsyncState(self)

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, job: str | None = None) -> State:
        """Open the state at *path* (a SQLite path or ``sqlite:///PATH``, or a ``postgresql://`` URL), creating
        it (and a SQLite file's directory) or migrating an older schema; *job*: see `State`.

        Raises `StateError` in one line naming the state (never a password) if it is not a usable state
        database or cannot be reached; a SQLite file is then left exactly as it was.
        """
        location = StateLocation.parse(path)
        if location.kind == "postgresql":
            return cls._open_postgresql(location, job=job)
        assert location.path is not None
        p = location.path
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
        state = cls(location, conn, job=job)
        try:
            state._setup()
        except BaseException:
            conn.close()
            raise
        return state

    @classmethod
    def _open_postgresql(cls, location: StateLocation, *, job: str | None = None) -> State:
        try:
            import psycopg
        except ImportError:  # pragma: no cover - a dependency of the package
            raise StateError(f"{location}: the PostgreSQL driver (psycopg) is not installed") from None
        assert location.url is not None
        connect = partial(
            psycopg.connect,
            location.url,
            autocommit=True,
            connect_timeout=10,
            application_name=f"hubmirror pid {os.getpid()} on {socket.gethostname()}"[:63],
        )
        try:
            raw = connect()
        except psycopg.Error as e:
            raise StateError(f"{location}: cannot connect to the state database: {_first_line(e)}") from None
        state = cls(location, _PgConnection(raw, connect), job=job)
        try:
            state._setup()
        except BaseException:
            raw.close()
            raise
        return state

    def _setup(self) -> None:
        if self._pg:
            self._setup_postgresql()
            return
        with self._guard("open"):
            # Read something first: a file that is not SQLite fails here, before any write.
            tables = self._tables()
            version = self._version(tables)
            self._check_version(version)
            mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StateError(f"{self.where}: cannot switch the state database to WAL mode (got {mode})")
            # NORMAL in WAL mode: a committed transaction survives a killed process; only an OS crash or
            # power cut can lose the last few commits, and the file stays consistent either way.
            self._conn.execute("PRAGMA synchronous = NORMAL")
            self._conn.execute("PRAGMA foreign_keys = ON")
            self._migrate(version)

    def _setup_postgresql(self) -> None:
        with self._guard("open"):
            version = self._version(self._tables())
            self._check_version(version)
            if version < SCHEMA_VERSION:
                self._migrate(version)

    def _tables(self) -> set[str]:
        if self._pg:
            sql = "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        else:
            sql = "SELECT name FROM sqlite_master WHERE type = 'table'"
        return {str(r[0]) for r in self._conn.execute(sql)}

    def _check_version(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise StateError(
                f"{self.where}: state schema version {version} is newer than this hubmirror "
                f"understands ({SCHEMA_VERSION}); upgrade hubmirror"
            )

    def _migrate(self, version: int) -> None:
        """Apply the migrations after *version*, one transaction each (the caller holds ``_guard``)."""
        purge = False
        while version < SCHEMA_VERSION:
            with self._write():
                if self._pg:  # one process migrates at a time; the others wait, then see it done
                    self._conn.execute("SELECT pg_advisory_xact_lock(?)", (_PG_MIGRATE_LOCK,))
                # Re-read inside the transaction: another process may have migrated meanwhile.
                version = self._version(self._tables())
                if version >= SCHEMA_VERSION:
                    break
                step = version + 1
                migration = _MIGRATIONS[step]
                if not isinstance(migration, str):
                    purge = migration(self._conn) or purge
                else:
                    for statement in _split_sql(_pg_ddl(migration) if self._pg else migration):
                        self._conn.execute(statement)
                if step == 1:
                    self._conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
                    self._conn.execute("INSERT INTO schema_version (version) VALUES (1)")
                else:
                    self._conn.execute("UPDATE schema_version SET version = ?", (step,))
                version = step
        if purge:
            self._purge()

    def _purge(self) -> None:
        """After a migration removed rows that held a secret: rebuild a SQLite file (VACUUM) and empty its WAL,
        so that no byte of them stays in free pages; vacuum PostgreSQL's ``meta`` (dead row versions). Best
        effort: another process reading the file may keep the WAL from being emptied."""
        try:
            if self._pg:
                self._conn.execute("VACUUM meta")
            else:
                self._conn.execute("VACUUM")
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.OperationalError:
            pass
        except Exception as e:
            if not (self._pg and _is_psycopg_error(e)):
                raise

    def _version(self, tables: set[str]) -> int:
        if "schema_version" not in tables:
            if tables:
                raise StateError(
                    f"{self.where}: not a hubmirror state database (it has tables {', '.join(sorted(tables))} "
                    "but no schema_version); left untouched"
                )
            return 0
        row = self._conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
        if row is None or row[0] is None:
            raise StateError(f"{self.where}: schema_version table is empty; left untouched")
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
            if self._file_lock is not None:
                self._file_lock.release()
            self._lock_depth = 0
            with contextlib.suppress(Exception):  # a lost PostgreSQL connection closes as well
                self._conn.close()

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(*args, **kwargs)`` on this state's worker thread (one thread: calls keep their order).

        PostgreSQL: when the connection is lost (the server restarted or stopped, the network), the call is
        made again on a new connection, with backoff, until it goes through or `reconnect_window` seconds
        have passed since the loss was seen; then `StateUnavailable`. Making it again is safe: *fn* is one
        `State` method, and each is one transaction (cut off: rolled back by the server, so made whole again)
        or a read; a commit whose answer was lost is looked up (`_write`) instead of being made twice.
        """
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="hubmirror-state")
        call = partial(fn, *args, **kwargs)
        loop = asyncio.get_running_loop()
        pause = 0.25
        while True:
            try:
                return await loop.run_in_executor(self._executor, call)
            except _ConnectionLost as e:
                since = self._down_since
                waited = time.monotonic() - since if since is not None else 0.0
                if waited >= self.reconnect_window:
                    raise self._unavailable(e.detail) from None
                await asyncio.sleep(min(pause, self.reconnect_window - waited))
                pause = min(pause * 2, 5.0)

    def _unavailable(self, detail: str) -> StateUnavailable:
        return StateUnavailable(
            f"{self.where}: the state database is unreachable ({detail}) and did not come back within "
            f"{self.reconnect_window:.0f} s; stopping (what was pushed is recorded, or settled by the next run)"
        )

    def __enter__(self) -> State:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"State({self.where!r})"

    # ------------------------------------------------------------------ plumbing

    @contextlib.contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        """Serialise access and turn database errors into `StateError` naming the state. PostgreSQL: a lost
        connection is `_ConnectionLost` (`run` makes the call again), and the next call opens a new one."""
        with self._mutex:
            outer = self._depth == 0
            self._depth += 1
            try:
                if outer and self._pg:
                    self._reconnect_if_lost()
                yield
            except sqlite3.DatabaseError as e:
                detail = str(e)
                if "not a database" in detail or "malformed" in detail or "corrupt" in detail:
                    raise StateError(
                        f"{self.where}: state database is corrupt ({detail}) during {what}; the file was left "
                        "untouched: move it away to start afresh"
                    ) from None
                raise StateError(f"{self.where}: {what} failed: {detail}") from None
            except sqlite3.Error as e:
                raise StateError(f"{self.where}: {what} failed: {e}") from None
            except Exception as e:
                if self._pg and _is_psycopg_error(e):
                    if self._pgconn.is_lost(e):
                        self._lost()
                        raise _ConnectionLost(self.where, what, _first_line(e)) from None
                    raise StateError(f"{self.where}: {what} failed: {_first_line(e)}") from None
                raise
            finally:
                self._depth -= 1

    @contextlib.contextmanager
    def _write(self) -> Iterator[None]:
        """One short write transaction (the caller holds ``_guard``).

        PostgreSQL: the transaction's id is read first, so that a ``COMMIT`` whose answer is lost with the
        connection is looked up on a new one (``txid_status``): made, the call returns as if nothing had
        happened; not made, the call fails as cut off (and `run` makes it again)."""
        self._conn.execute("BEGIN IMMEDIATE")
        xid: int | None = None
        try:
            if self._pg:
                xid = int(self._conn.execute("SELECT txid_current()").fetchone()[0])
            yield
        except BaseException:
            with contextlib.suppress(Exception):  # a broken connection: the server rolls back itself
                self._conn.execute("ROLLBACK")
            raise
        try:
            self._conn.execute("COMMIT")
        except Exception as e:
            if xid is None or not _is_psycopg_error(e) or not self._pgconn.is_lost(e):
                raise
            self._lost()
            detail = _first_line(e)
            if not self._committed(xid, detail):  # rolled back: made whole again by `run`
                raise _ConnectionLost(self.where, "commit", detail) from None

    # ------------------------------------------------------------------ PostgreSQL: a lost connection

    @property
    def _pgconn(self) -> _PgConnection:
        assert isinstance(self._conn, _PgConnection)
        return self._conn

    def _lost(self) -> None:
        """The connection was found lost: the next call reconnects; `run` waits from now on."""
        self._pgconn.lost = True
        if self._down_since is None:
            self._down_since = time.monotonic()

    def _reconnect_if_lost(self) -> None:
        """Before a call: a lost connection is opened again (one attempt: `_ConnectionLost` if the server
        cannot be reached), and the session's sync lock, if this `State` held it, taken again: another sync
        that took it meanwhile makes this one stop (`StateLocked`)."""
        conn = self._pgconn
        if not conn.broken:
            return
        if self._down_since is None:
            self._down_since = time.monotonic()
        try:
            conn.reconnect()
        except Exception as e:
            if _is_psycopg_error(e):
                raise _ConnectionLost(self.where, "reconnect", _first_line(e)) from None
            raise
        down = time.monotonic() - self._down_since
        self._down_since = None
        log.warning("%s: the connection to the state database was lost; reconnected after %.1f s", self.where, down)
        if self._lock_depth and not conn.execute("SELECT pg_try_advisory_lock(?)", (_PG_SYNC_LOCK,)).fetchone()[0]:
            raise StateLocked(
                f"{self.where}: the sync lock went with the lost connection to the state database, and another "
                "sync took it meanwhile; stopping"
            )

    def _committed(self, xid: int, detail: str) -> bool:
        """Whether transaction *xid*, whose ``COMMIT`` lost its answer with the connection, was committed:
        asked on a new connection, waiting (backoff) up to `reconnect_window` for the server to come back;
        `StateUnavailable` if it does not (or if the old session still holds it open by then)."""
        deadline = (self._down_since or time.monotonic()) + self.reconnect_window
        pause = 0.25
        while True:
            try:
                self._reconnect_if_lost()
                status = self._conn.execute("SELECT txid_status(?)", (xid,)).fetchone()[0]
                if status != "in progress":  # the old session may not have ended yet
                    return bool(status == "committed")
                detail = "the transaction is still in progress on the old session"
            except _ConnectionLost as e:
                detail = e.detail
            except Exception as e:
                if not (_is_psycopg_error(e) and self._pgconn.is_lost(e)):
                    raise
                self._lost()
                detail = _first_line(e)
            if time.monotonic() >= deadline:
                raise self._unavailable(f"a commit's answer was lost, its outcome is unknown: {detail}")
            time.sleep(pause)
            pause = min(pause * 2, 5.0)

    # ------------------------------------------------------------------ lock

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the sync lock on this state for the ``with`` block.

        Raises `StateLocked` (naming the holder's pid) at once if another process holds it. The kernel
        drops the lock when the holding process dies, however it dies. Re-entrant within one `State`.
        """
        with self._mutex:
            if self._lock_depth == 0:
                self._acquire_lock()
            self._lock_depth += 1
        try:
            yield
        finally:
            with self._mutex:
                self._lock_depth -= 1
                if self._lock_depth == 0:
                    self._release_lock()

    def _acquire_lock(self) -> None:
        if self._file_lock is not None:
            self._file_lock.acquire()
            return
        with self._guard("lock"):  # a session advisory lock: PostgreSQL drops it when the holder disconnects
            got = self._conn.execute("SELECT pg_try_advisory_lock(?)", (_PG_SYNC_LOCK,)).fetchone()[0]
            if got:
                return
            row = self._conn.execute(
                "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.objid = ? AND l.granted",
                (_PG_SYNC_LOCK,),
            ).fetchone()
        who = f" ({row[0]})" if row and row[0] else ""
        raise StateLocked(f"{self.where}: another hubmirror sync{who} is using this state")

    def _release_lock(self) -> None:
        if self._file_lock is not None:
            self._file_lock.release()
            return
        with contextlib.suppress(StateError), self._guard("unlock"):
            self._conn.execute("SELECT pg_advisory_unlock(?)", (_PG_SYNC_LOCK,))

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

    def record_tags(self, records: Iterable[TagRecord], *, job: str | None = None) -> None:
        """Record several tags in one transaction (e.g. marking a batch up to date), each claimed for *job*
        (default: this state's `job`; none when both are None) in the same transaction."""
        records = list(records)
        owner = job if job is not None else self.job
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
            if owner is not None:
                self._claim(owner, [(r.dest_repo, r.tag) for r in records])

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
        """Drop the record of *dest_repo:tag* and its owners (after pruning it); True if there was one."""
        with self._guard("forget tag"), self._write():
            self._conn.execute("DELETE FROM tag_owners WHERE dest_repo = ? AND tag = ?", (dest_repo, tag))
            cur = self._conn.execute("DELETE FROM tags WHERE dest_repo = ? AND tag = ?", (dest_repo, tag))
            return cur.rowcount > 0

    # ------------------------------------------------------------------ jobs: who owns each tag

    def claim_tags(self, job: str, keys: Iterable[tuple[str, str]]) -> int:
        """Make *job* an owner of each recorded (dest_repo, tag) of *keys* (a tag the state has no record of
        is skipped); returns how many it did not own before."""
        keys = list(keys)
        if not keys:
            return 0
        with self._guard("claim tags"), self._write():
            return self._claim(job, keys)

    def _claim(self, job: str, keys: Sequence[tuple[str, str]]) -> int:
        """`claim_tags` inside the caller's transaction."""
        return self._changes(
            "INSERT INTO tag_owners (dest_repo, tag, job, since) "
            "SELECT dest_repo, tag, ?, ? FROM tags WHERE dest_repo = ? AND tag = ? "
            "ON CONFLICT (dest_repo, tag, job) DO NOTHING",
            [(job, _to_text(_now()), repo, tag) for repo, tag in keys],
        )

    def _changes(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        """Run *sql* for each of *rows* (in the caller's transaction); how many rows it changed in all."""
        if isinstance(self._conn, sqlite3.Connection):
            before = self._conn.total_changes
            self._conn.executemany(sql, rows)
            return self._conn.total_changes - before
        assert isinstance(self._conn, _PgConnection)
        return max(0, self._conn.executemany(sql, rows))  # one round trip for all of them

    def release_tags(self, job: str, keys: Iterable[tuple[str, str]]) -> int:
        """*job* no longer owns the (dest_repo, tag) of *keys* (they left its selection while other jobs
        still own them); the tags and their records stay. Returns how many it owned."""
        keys = list(keys)
        if not keys:
            return 0
        with self._guard("release tags"), self._write():
            return self._changes(
                "DELETE FROM tag_owners WHERE dest_repo = ? AND tag = ? AND job = ?",
                [(repo, tag, job) for repo, tag in keys],
            )

    def tag_owners(self, *, prefix: str | None = None) -> dict[tuple[str, str], frozenset[str]]:
        """(dest_repo, tag) → the jobs owning it, for the recorded tags (of the repositories whose name starts
        with *prefix*) that have an owner; a tag recorded before jobs were tracked and claimed by no job since
        is absent."""
        sql = "SELECT dest_repo, tag, job FROM tag_owners"
        args: list[str | int] = []
        if prefix is not None:
            sql += " WHERE substr(dest_repo, 1, ?) = ?"
            args += [len(prefix), prefix]
        with self._guard("read tag owners"):
            rows = self._conn.execute(sql, args).fetchall()
        out: dict[tuple[str, str], set[str]] = {}
        for repo, tag, job in rows:
            out.setdefault((repo, tag), set()).add(job)
        return {k: frozenset(v) for k, v in out.items()}

    def jobs(self) -> list[JobInfo]:
        """Every job that owns tags or ran on this state, by name, with the tags it owns and its latest run."""
        with self._guard("read jobs"):
            owned = self._conn.execute(
                "SELECT job, dest_repo, tag FROM tag_owners ORDER BY job, dest_repo, tag"
            ).fetchall()
            latest = self._conn.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE id IN "
                "(SELECT MAX(id) FROM runs WHERE job IS NOT NULL GROUP BY job)"
            ).fetchall()
        tags: dict[str, list[tuple[str, str]]] = {}
        for job, repo, tag in owned:
            tags.setdefault(job, []).append((repo, tag))
        runs = {r.job: r for r in map(_run_record, latest) if r.job is not None}
        return [JobInfo(name, tuple(tags.get(name, ())), runs.get(name)) for name in sorted({*tags, *runs})]

    def unowned_tags(self) -> list[TagRecord]:
        """Recorded tags no job owns (recorded before jobs were tracked, not claimed since): never pruned."""
        with self._guard("read unowned tags"):
            rows = self._conn.execute(
                f"SELECT {_TAG_COLUMNS} FROM tags WHERE NOT EXISTS (SELECT 1 FROM tag_owners o "
                "WHERE o.dest_repo = tags.dest_repo AND o.tag = tags.tag) ORDER BY dest_repo, tag"
            ).fetchall()
        return [_tag_record(r) for r in rows]

    # ------------------------------------------------------------------ deletions

    def record_deletion(self, dest_repo: str, tag: str, digest: str, how: str, *, run_id: int | None = None) -> None:
        """Log that prune deleted *tag* of *dest_repo* (*how*: see `Deletion`), for this state's job; the
        next run of any job on this destination then checks the children of the indexes it keeps."""
        with self._guard("record deletion"), self._write():
            self._conn.execute(
                "INSERT INTO deletions (dest_repo, tag, digest, how, job, run_id, at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (dest_repo, tag, digest, how, self.job, run_id, _to_text(_now())),
            )
            self._conn.execute(
                "DELETE FROM deletions WHERE id <= (SELECT MAX(id) FROM deletions) - ?", (DELETIONS_KEPT,)
            )

    def deletions(self, *, prefix: str | None = None, since: datetime | None = None) -> list[Deletion]:
        """What prune deleted (in the repositories whose name starts with *prefix*; after *since*), oldest
        first."""
        where: list[str] = []
        args: list[str | int] = []
        if prefix is not None:
            where.append("substr(dest_repo, 1, ?) = ?")
            args += [len(prefix), prefix]
        if since is not None:
            where.append("at > ?")
            args.append(_to_text(since))
        sql = "SELECT dest_repo, tag, digest, how, job, run_id, at FROM deletions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._guard("read deletions"):
            rows = self._conn.execute(sql + " ORDER BY id", args).fetchall()
        return [Deletion(r[0], r[1], r[2], r[3], r[4], r[5], _from_text(r[6])) for r in rows]

    def children_checked(self, prefix: str) -> datetime | None:
        """When a run last found every child of the indexes it believed up to date under *prefix* (a
        destination namespace) at the destination; None if never."""
        text = self.get_meta(_CHILDREN_CHECKED_KEY + prefix)
        return _from_text(text) if text else None

    def set_children_checked(self, prefix: str, when: datetime) -> None:
        """Record that a check that began at *when* found every child of the indexes under *prefix*."""
        self.set_meta(_CHILDREN_CHECKED_KEY + prefix, _to_text(when))

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

    def clear_deferred_many(self, items: Iterable[tuple[str, str]]) -> int:
        """`clear_deferred` of every (source_ref, dest_repo) of *items*, in one transaction (one round trip to
        PostgreSQL for all of them); how many there were."""
        rows = list(items)
        if not rows:
            return 0
        with self._guard("clear deferred work"), self._write():
            return self._changes("DELETE FROM deferred WHERE source_ref = ? AND dest_repo = ?", rows)

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

    # ------------------------------------------------------------------ freshness

    def note_changes(self, changes: Iterable[PendingChange]) -> None:
        """Remember upstream changes not yet mirrored; a tag already pending keeps its earliest change time
        (and its first sighting), takes the newest digest and reason."""
        rows = [
            (c.dest_repo, c.tag, c.upstream_digest, _to_text(c.changed_at), _to_text(c.seen_at), c.reason)
            for c in changes
        ]
        if not rows:
            return
        with self._guard("note changes"), self._write():
            self._conn.executemany(
                """
                INSERT INTO pending_changes (dest_repo, tag, upstream_digest, changed_at, seen_at, reason)
                VALUES (?, ?, ?, ?, ?, ?)
                ON CONFLICT (dest_repo, tag) DO UPDATE SET
                    upstream_digest = excluded.upstream_digest,
                    reason = excluded.reason,
                    changed_at = CASE WHEN excluded.changed_at < pending_changes.changed_at
                                      THEN excluded.changed_at ELSE pending_changes.changed_at END
                """,
                rows,
            )

    def settle_changes(self, dest_repo: str, tags: Sequence[str]) -> list[PendingChange]:
        """The pending changes of *tags* now at the destination, removed (their age is each tag's lag)."""
        if not tags:
            return []
        marks = ", ".join("?" for _ in tags)
        with self._guard("settle changes"), self._write():
            rows = self._conn.execute(
                f"SELECT {_CHANGE_COLUMNS} FROM pending_changes WHERE dest_repo = ? AND tag IN ({marks})",
                (dest_repo, *tags),
            ).fetchall()
            if rows:
                self._conn.execute(
                    f"DELETE FROM pending_changes WHERE dest_repo = ? AND tag IN ({marks})", (dest_repo, *tags)
                )
        return [_change(r) for r in rows]

    def pending_changes(self, *, prefix: str | None = None) -> list[PendingChange]:
        """Upstream changes not yet mirrored (of the repositories whose name starts with *prefix*), oldest
        first."""
        sql = f"SELECT {_CHANGE_COLUMNS} FROM pending_changes"
        args: list[str | int] = []
        if prefix is not None:
            sql += " WHERE substr(dest_repo, 1, ?) = ?"
            args += [len(prefix), prefix]
        with self._guard("read pending changes"):
            rows = self._conn.execute(sql + " ORDER BY changed_at, dest_repo, tag", args).fetchall()
        return [_change(r) for r in rows]

    def set_change_reasons(self, reasons: Mapping[tuple[str, str], str]) -> None:
        """Say why pending changes still wait ((dest_repo, tag) → reason: the quota, a failure, …)."""
        if not reasons:
            return
        with self._guard("note change reasons"), self._write():
            self._conn.executemany(
                "UPDATE pending_changes SET reason = ? WHERE dest_repo = ? AND tag = ?",
                [(why, repo, tag) for (repo, tag), why in reasons.items()],
            )

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
            return self._changes("DELETE FROM pending_manifests WHERE digest = ?", [(d,) for d in digests])

    # ------------------------------------------------------------------ runs

    def begin_run(self, commit: str | None = None) -> int:
        """Start a run (of this state's job) and return its id. Runs still ``running`` (their sync was
        killed) become ``interrupted``; call this while holding `lock`."""
        with self._guard("begin run"), self._write():
            self._conn.execute(
                "UPDATE runs SET status = 'interrupted' WHERE status = 'running'",
            )
            row = self._conn.execute(
                "INSERT INTO runs (started, status, \"commit\", job) VALUES (?, 'running', ?, ?) RETURNING id",
                (_to_text(_now()), commit, self.job),
            ).fetchone()
            return int(row[0])

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
                raise StateError(f"{self.where}: no run with id {run_id}")

    def runs(self, limit: int = 20) -> list[RunRecord]:
        """The latest *limit* runs, newest first."""
        with self._guard("read runs"):
            rows = self._conn.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs ORDER BY id DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [_run_record(r) for r in rows]

    # ------------------------------------------------------------------ workers (one run, several processes)

    @property
    def cooperative(self) -> bool:
        """True when several syncs may work on one run of this state (PostgreSQL): they claim its
        repositories (`claim_unit`) instead of taking the sync `lock`."""
        return self._pg

    def join_run(
        self,
        job: str,
        units: Sequence[str],
        worker: str,
        *,
        commit: str | None,
        lease: float,
        now: float,
    ) -> tuple[int, bool]:
        """Join the run of *job* under way, or start one; returns (run id, True if this call started it).

        A run whose workers all lost their leases (killed) is ``abandoned`` (its ``runs`` row
        ``interrupted``) and a new one starts. Starting a run adds a ``runs`` row and lists *units*
        (destination repositories, in priority order); a worker joining adds the units it knows that are
        missing. Either way *worker* is registered with a lease until ``now + lease``. The pull quota is not
        touched: workers of other jobs may be taking from it (`take_pulls`).
        """
        with self._guard("join run"), self._write():
            if self._pg:  # two workers starting together: one starts the run, the other joins it
                self._conn.execute("SELECT pg_advisory_xact_lock(?)", (_PG_JOIN_LOCK,))
            row = self._conn.execute(
                "SELECT run_id FROM work_runs WHERE job = ? AND status IN ('open', 'closing') ORDER BY run_id DESC",
                (job,),
            ).fetchone()
            if row is not None:
                live = self._conn.execute(
                    "SELECT COUNT(*) FROM work_workers WHERE run_id = ? AND status = 'working' AND lease_until >= ?",
                    (row[0], now),
                ).fetchone()[0]
                if not live:
                    self._conn.execute("UPDATE work_runs SET status = 'abandoned' WHERE run_id = ?", (row[0],))
                    self._conn.execute(
                        "UPDATE runs SET status = 'interrupted' WHERE id = ? AND status = 'running'", (row[0],)
                    )
                    row = None
            started = row is None
            if row is None:
                run_id = int(
                    self._conn.execute(
                        "INSERT INTO runs (started, status, \"commit\", job) VALUES (?, 'running', ?, ?) RETURNING id",
                        (_to_text(_now()), commit, self.job),
                    ).fetchone()[0]
                )
                self._conn.execute(
                    "INSERT INTO work_runs (run_id, job, status, started) VALUES (?, ?, 'open', ?)",
                    (run_id, job, _to_text(_now())),
                )
                # The blobs of runs that are over (closed, or abandoned by workers that all died) go.
                self._conn.execute(
                    "DELETE FROM work_blobs WHERE run_id NOT IN "
                    "(SELECT run_id FROM work_runs WHERE status IN ('open', 'closing'))"
                )
            else:
                run_id = int(row[0])
            self._conn.executemany(
                "INSERT INTO work_units (run_id, dest_repo, position, status) VALUES (?, ?, ?, 'todo') "
                "ON CONFLICT (run_id, dest_repo) DO NOTHING",
                [(run_id, unit, i) for i, unit in enumerate(units)],
            )
            self._conn.execute(
                "INSERT INTO work_workers (run_id, worker, status, lease_until) VALUES (?, ?, 'working', ?) "
                "ON CONFLICT (run_id, worker) DO UPDATE SET status = 'working', lease_until = excluded.lease_until",
                (run_id, worker, now + lease),
            )
        return run_id, started

    def claim_unit(self, run_id: int, worker: str, *, lease: float, now: float) -> str | None:
        """Claim the first unit of run *run_id* nobody holds (never claimed, or its holder's lease ran out)
        for *worker* until ``now + lease``; its name, or None when there is none. PostgreSQL: ``SELECT …
        FOR UPDATE SKIP LOCKED``, so workers claiming together never wait on each other."""
        skip = " FOR UPDATE SKIP LOCKED" if self._pg else ""
        with self._guard("claim work"), self._write():
            row = self._conn.execute(
                "SELECT dest_repo FROM work_units WHERE run_id = ? AND (status = 'todo' OR "
                "(status = 'claimed' AND lease_until < ?)) ORDER BY position, dest_repo LIMIT 1" + skip,
                (run_id, now),
            ).fetchone()
            if row is not None:
                self._conn.execute(
                    "UPDATE work_units SET status = 'claimed', worker = ?, lease_until = ?, attempts = attempts + 1 "
                    "WHERE run_id = ? AND dest_repo = ?",
                    (worker, now + lease, run_id, row[0]),
                )
            self._conn.execute(
                "UPDATE work_workers SET lease_until = ? WHERE run_id = ? AND worker = ?", (now + lease, run_id, worker)
            )
        return str(row[0]) if row is not None else None

    def renew_leases(self, run_id: int, worker: str, *, lease: float, now: float) -> list[str]:
        """The heartbeat: *worker*'s leases (its own, its units', its blobs in flight) last until ``now +
        lease``; the units it still holds (one missing was taken over by another worker after its lease ran
        out)."""
        with self._guard("renew leases"), self._write():
            self._conn.execute(
                "UPDATE work_workers SET lease_until = ? WHERE run_id = ? AND worker = ?", (now + lease, run_id, worker)
            )
            self._conn.execute(
                "UPDATE work_units SET lease_until = ? WHERE run_id = ? AND worker = ? AND status = 'claimed'",
                (now + lease, run_id, worker),
            )
            self._conn.execute(
                "UPDATE work_blobs SET lease_until = ? WHERE run_id = ? AND worker = ? AND lease_until IS NOT NULL",
                (now + lease, run_id, worker),
            )
            rows = self._conn.execute(
                "SELECT dest_repo FROM work_units WHERE run_id = ? AND worker = ? AND status = 'claimed'",
                (run_id, worker),
            ).fetchall()
        return sorted(str(r[0]) for r in rows)

    def finish_unit(
        self, run_id: int, unit: str, worker: str, *, blockers: Sequence[str] = (), summary: Mapping[str, Any]
    ) -> bool:
        """Mark *unit* done by *worker* (with what must stop prune: checks that failed) and keep the
        worker's *summary* so far, in one transaction; False if another worker had taken the unit over."""
        with self._guard("finish work"), self._write():
            cur = self._conn.execute(
                "UPDATE work_units SET status = 'done', lease_until = NULL, blockers = ? "
                "WHERE run_id = ? AND dest_repo = ? AND worker = ? AND status = 'claimed'",
                (json.dumps(list(blockers)), run_id, unit, worker),
            )
            self._conn.execute(
                "UPDATE work_workers SET summary = ? WHERE run_id = ? AND worker = ?",
                (json.dumps(dict(summary), sort_keys=True, default=str), run_id, worker),
            )
            return cur.rowcount > 0

    def release_units(self, run_id: int, worker: str) -> None:
        """*worker* stops (an error): the units it holds, and the blobs it was transferring, go back to be
        claimed at once."""
        with self._guard("release work"), self._write():
            self._conn.execute(
                "DELETE FROM work_blobs WHERE run_id = ? AND worker = ? AND lease_until IS NOT NULL", (run_id, worker)
            )
            self._conn.execute(
                "UPDATE work_units SET status = 'todo', worker = NULL, lease_until = NULL "
                "WHERE run_id = ? AND worker = ? AND status = 'claimed'",
                (run_id, worker),
            )
            self._conn.execute(
                "UPDATE work_workers SET status = 'failed' WHERE run_id = ? AND worker = ?", (run_id, worker)
            )

    def units_left(self, run_id: int) -> int:
        """Units of run *run_id* not done yet (claimed or not)."""
        with self._guard("read work"):
            return int(
                self._conn.execute(
                    "SELECT COUNT(*) FROM work_units WHERE run_id = ? AND status <> 'done'", (run_id,)
                ).fetchone()[0]
            )

    def close_run(
        self, run_id: int, worker: str, summary: Mapping[str, Any], *, now: float, stopped: bool = False
    ) -> bool:
        """*worker* is finished (with *summary*); True if it is the one to close the run: every unit is done
        (or, *stopped*, it was asked to stop and no other worker is alive to do the rest) and no other worker
        closes it. The closer prunes (not when units are left), records the run and calls `end_run`."""
        with self._guard("close run"), self._write():
            self._conn.execute(
                "UPDATE work_workers SET status = 'finished', summary = ? WHERE run_id = ? AND worker = ?",
                (json.dumps(dict(summary), sort_keys=True, default=str), run_id, worker),
            )
            left = self._conn.execute(
                "SELECT COUNT(*) FROM work_units WHERE run_id = ? AND status <> 'done'", (run_id,)
            ).fetchone()[0]
            if left and stopped:
                left = self._conn.execute(
                    "SELECT COUNT(*) FROM work_workers WHERE run_id = ? AND status = 'working' AND lease_until >= ?",
                    (run_id, now),
                ).fetchone()[0]
            if left:
                return False
            cur = self._conn.execute(
                "UPDATE work_runs SET status = 'closing', closer = ? WHERE run_id = ? AND status = 'open'",
                (worker, run_id),
            )
            if cur.rowcount == 0:
                return False
            # The closer stays a live worker while it closes: one arriving meanwhile joins this run.
            self._conn.execute(
                "UPDATE work_workers SET status = 'working' WHERE run_id = ? AND worker = ?", (run_id, worker)
            )
            return True

    def run_work(self, run_id: int) -> tuple[dict[str, dict[str, Any]], list[str]]:
        """Run *run_id*'s workers → the summary each kept (what it did), and every unit's prune blockers."""
        with self._guard("read work"):
            workers = self._conn.execute(
                "SELECT worker, summary FROM work_workers WHERE run_id = ? ORDER BY worker", (run_id,)
            ).fetchall()
            units = self._conn.execute(
                "SELECT blockers FROM work_units WHERE run_id = ? ORDER BY position, dest_repo", (run_id,)
            ).fetchall()
        summaries = {str(w): json.loads(s) if s else {} for w, s in workers}
        blockers = [b for (text,) in units if text for b in json.loads(text)]
        return summaries, blockers

    def end_run(self, run_id: int) -> None:
        """The closer is done: run *run_id* is closed (the next sync of its job starts a new run)."""
        with self._guard("end run"), self._write():
            self._conn.execute("UPDATE work_runs SET status = 'closed' WHERE run_id = ?", (run_id,))
            self._conn.execute("DELETE FROM work_blobs WHERE run_id = ?", (run_id,))
            self._conn.execute(
                "UPDATE work_workers SET status = 'finished' WHERE run_id = ? AND status = 'working'", (run_id,)
            )

    def work_units(self, run_id: int) -> list[tuple[str, str, str | None, int]]:
        """(unit, status, worker, attempts) of every unit of run *run_id*, in priority order."""
        with self._guard("read work"):
            rows = self._conn.execute(
                "SELECT dest_repo, status, worker, attempts FROM work_units WHERE run_id = ? "
                "ORDER BY position, dest_repo",
                (run_id,),
            ).fetchall()
        return [(str(r[0]), str(r[1]), r[2], int(r[3])) for r in rows]

    # ------------------------------------------------------------------ blobs workers share in a run

    def blob_holders(self, run_id: int, digest: str) -> list[str]:
        """The destination repositories workers of run *run_id* placed blob *digest* in (copied, mounted, or
        found there), sorted."""
        with self._guard("read blobs"):
            rows = self._conn.execute(
                "SELECT dest_repo FROM work_blobs WHERE run_id = ? AND digest = ? AND lease_until IS NULL "
                "ORDER BY dest_repo",
                (run_id, digest),
            ).fetchall()
        return [str(r[0]) for r in rows]

    def claim_blob(self, run_id: int, digest: str, dest_repo: str, worker: str, *, lease: float, now: float) -> bool:
        """Claim the transfer of blob *digest* into *dest_repo* for *worker* until ``now + lease`` (renewed by
        `renew_leases`); False, claiming nothing, while another claim of the blob in run *run_id* is alive
        (its lease not run out) or another repository holds it (`blob_holders`): mount or wait instead."""
        with self._guard("claim blob"), self._write():
            if self._pg:  # two workers claiming one blob together: one after the other
                self._conn.execute(
                    "SELECT pg_advisory_xact_lock(CAST(? AS integer), hashtext(CAST(? AS text)))",
                    (_PG_BLOB_LOCK, digest),
                )
            busy = self._conn.execute(
                "SELECT 1 FROM work_blobs WHERE run_id = ? AND digest = ? AND dest_repo <> ? "
                "AND (lease_until IS NULL OR lease_until >= ?) LIMIT 1",
                (run_id, digest, dest_repo, now),
            ).fetchone()
            if busy is not None:
                return False
            self._conn.execute(
                "INSERT INTO work_blobs (run_id, digest, dest_repo, worker, lease_until) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (run_id, digest, dest_repo) DO UPDATE SET worker = excluded.worker, "
                "lease_until = excluded.lease_until",
                (run_id, digest, dest_repo, worker, now + lease),
            )
            return True

    def blob_in_flight(self, run_id: int, digest: str, *, now: float) -> bool:
        """Is blob *digest* being transferred by a worker of run *run_id* (a claim whose lease is alive)?"""
        with self._guard("read blobs"):
            row = self._conn.execute(
                "SELECT 1 FROM work_blobs WHERE run_id = ? AND digest = ? AND lease_until >= ? LIMIT 1",
                (run_id, digest, now),
            ).fetchone()
        return row is not None

    def placed_blob(self, run_id: int, digest: str, dest_repo: str, worker: str) -> None:
        """*worker* placed blob *digest* in *dest_repo* (copied, mounted or found there); its claim, if any,
        is over."""
        with self._guard("record blob"), self._write():
            self._conn.execute(
                "INSERT INTO work_blobs (run_id, digest, dest_repo, worker, lease_until) VALUES (?, ?, ?, ?, NULL) "
                "ON CONFLICT (run_id, digest, dest_repo) DO UPDATE SET worker = excluded.worker, lease_until = NULL",
                (run_id, digest, dest_repo, worker),
            )

    def release_blob(self, run_id: int, digest: str, dest_repo: str, worker: str) -> None:
        """*worker*'s transfer of blob *digest* into *dest_repo* failed: its claim goes (another may try)."""
        with self._guard("release blob"), self._write():
            self._conn.execute(
                "DELETE FROM work_blobs WHERE run_id = ? AND digest = ? AND dest_repo = ? AND worker = ? "
                "AND lease_until IS NOT NULL",
                (run_id, digest, dest_repo, worker),
            )

    # ------------------------------------------------------------------ the shared pull quota

    def take_pulls(
        self,
        quota_key: str,
        want: int,
        *,
        worker: str,
        run_id: int,
        remaining: int | None,
        observed_at: float,
        reserve: int,
        now: float,
    ) -> int:
        """Take up to *want* pulls of the quota *quota_key* shared by the workers for *worker* (of run
        *run_id*): debited in this transaction, they are the taker's to spend (`settle_pulls` gives back what it
        did not). Returns how many it got (0 when none are left).

        *remaining* is the quota left as the source last reported it (``ratelimit-remaining``, received at
        *observed_at*; None: the source reports no quota, every pull is granted). It sets the pulls
        available (less *reserve*) when nobody knows them yet; it lowers them when it says less is left than
        the workers think (someone else pulls on this quota); it raises them (a new window) only when no
        pulls are out and it was received after the last were settled, so it counts every pull spent.

        Pulls are out per worker (``pull_quota_workers``), whatever its job. Those of a worker that died (its
        lease in ``work_workers`` ran out, or it stopped) are spent once *remaining* was received after its
        lease ran out (it counts them); until then they are still out. A run starting does not reset the row.
        """
        if want <= 0:
            return 0
        if remaining is None:
            return want
        lock = " FOR UPDATE" if self._pg else ""
        seen = remaining - reserve
        with self._guard("take pulls"), self._write():
            self._conn.execute(  # the first taker creates the row (unknown: it is counted below)
                "INSERT INTO pull_quota (quota_key, available, outstanding, settled_at, updated_at) "
                "VALUES (?, NULL, 0, ?, ?) ON CONFLICT (quota_key) DO NOTHING",
                (quota_key, now, _to_text(_now())),
            )
            # The row lock (PostgreSQL) serialises every taker and settler of this quota, and with them
            # every change to its `pull_quota_workers` rows.
            row = self._conn.execute(
                "SELECT available, settled_at FROM pull_quota WHERE quota_key = ?" + lock, (quota_key,)
            ).fetchone()
            outstanding = self._pulls_out(quota_key, worker, observed_at=observed_at, now=now)
            if row[0] is None or seen < int(row[0]):  # unknown, or someone else pulled: count afresh
                available = max(0, seen - outstanding)
            elif outstanding == 0 and observed_at > float(row[1]):  # every pull counted: the window refilled
                available = seen
            else:
                available = int(row[0])
            got = max(0, min(want, available))
            self._conn.execute(
                "UPDATE pull_quota SET available = ?, updated_at = ? WHERE quota_key = ?",
                (available - got, _to_text(_now()), quota_key),
            )
            if got:
                self._conn.execute(
                    "INSERT INTO pull_quota_workers (quota_key, worker, run_id, outstanding) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (quota_key, worker) DO UPDATE SET run_id = excluded.run_id, "
                    "outstanding = pull_quota_workers.outstanding + excluded.outstanding",
                    (quota_key, worker, run_id, got),
                )
        return got

    def _pulls_out(self, quota_key: str, taker: str, *, observed_at: float, now: float) -> int:
        """The pulls of *quota_key* out with workers (taken, not settled), as `take_pulls` counts them with an
        observation received at *observed_at*: those of *taker* (alive: it takes), of every worker whose lease
        is alive (``working``, not run out), and of a dead worker whose lease ran out after *observed_at* (the
        observation may not count the pulls it spent last). The rows of the other dead workers are forgotten:
        their pulls are spent, and counted by the observation. In `take_pulls`' transaction."""
        rows = self._conn.execute(
            "SELECT q.worker, q.outstanding, w.status, w.lease_until FROM pull_quota_workers q "
            "LEFT JOIN work_workers w ON w.run_id = q.run_id AND w.worker = q.worker WHERE q.quota_key = ?",
            (quota_key,),
        ).fetchall()
        out, gone = 0, []
        for name, n, status, lease_until in rows:
            until = float(lease_until) if lease_until is not None else None
            counted = until is not None and ((status == "working" and until >= now) or until >= observed_at)
            if name == taker or counted:
                out += int(n)
            else:
                gone.append((quota_key, name))
        if gone:
            self._conn.executemany("DELETE FROM pull_quota_workers WHERE quota_key = ? AND worker = ?", gone)
        return out

    def settle_pulls(self, quota_key: str, taken: int, unused: int, *, worker: str, now: float) -> None:
        """*taken* pulls *worker* took (`take_pulls`) are no longer out: *unused* of them go back to the quota
        *quota_key*, the rest were spent. Pulls set aside for work in flight are settled later, when it is
        done. Nothing goes back beyond what the worker holds: the pulls of a worker taken for dead (forgotten
        by `take_pulls`) count as spent even if it lives after all."""
        if taken <= 0 and unused <= 0:
            return
        lock = " FOR UPDATE" if self._pg else ""
        with self._guard("settle pulls"), self._write():
            self._conn.execute("SELECT 1 FROM pull_quota WHERE quota_key = ?" + lock, (quota_key,))  # as takers do
            row = self._conn.execute(
                "SELECT outstanding FROM pull_quota_workers WHERE quota_key = ? AND worker = ?", (quota_key, worker)
            ).fetchone()
            held = int(row[0]) if row is not None else 0
            if held > max(taken, 0):
                self._conn.execute(
                    "UPDATE pull_quota_workers SET outstanding = ? WHERE quota_key = ? AND worker = ?",
                    (held - taken, quota_key, worker),
                )
            elif row is not None:
                self._conn.execute(
                    "DELETE FROM pull_quota_workers WHERE quota_key = ? AND worker = ?", (quota_key, worker)
                )
            self._conn.execute(
                "UPDATE pull_quota SET available = available + ?, settled_at = ?, updated_at = ? WHERE quota_key = ?",
                (max(0, min(unused, held)), now, _to_text(_now()), quota_key),
            )

    def work_in_progress(self, *, now: float) -> list[dict[str, Any]]:
        """Runs workers share that are not closed: per run its job, status, units per status and each
        worker with its status and the seconds left on its lease (negative: it ran out)."""
        with self._guard("read work"):
            runs = self._conn.execute(
                "SELECT run_id, job, status FROM work_runs WHERE status IN ('open', 'closing') ORDER BY run_id"
            ).fetchall()
            out = []
            for run_id, job, status in runs:
                units = self._conn.execute(
                    "SELECT status, COUNT(*) FROM work_units WHERE run_id = ? GROUP BY status", (run_id,)
                ).fetchall()
                workers = self._conn.execute(
                    "SELECT worker, status, lease_until FROM work_workers WHERE run_id = ? ORDER BY worker", (run_id,)
                ).fetchall()
                out.append(
                    {
                        "run": int(run_id),
                        "job": job,
                        "status": status,
                        "units": {str(k): int(n) for k, n in units},
                        "workers": [
                            {"worker": w, "status": st, "lease_left": round(float(lease) - now, 1)}
                            for w, st, lease in workers
                        ],
                    }
                )
        return out

    def pull_quota(self, quota_key: str) -> tuple[int | None, int] | None:
        """(pulls available, pulls taken and not settled) of the shared quota *quota_key*, or None. The pulls
        taken include those of workers that died since, until `take_pulls` forgets them."""
        with self._guard("read pull quota"):
            row = self._conn.execute(
                "SELECT available, (SELECT COALESCE(SUM(outstanding), 0) FROM pull_quota_workers q "
                "WHERE q.quota_key = pull_quota.quota_key) FROM pull_quota WHERE quota_key = ?",
                (quota_key,),
            ).fetchone()
        return (None if row[0] is None else int(row[0]), int(row[1])) if row else None

    # ------------------------------------------------------------------ serve replicas (one scheduler)

    def add_trigger(
        self,
        job: str,
        reason: str,
        repositories: Sequence[str] | None,
        replica: str,
        *,
        deliveries: Sequence[str] = (),
        remember: int = 4096,
    ) -> int | None:
        """Ask the scheduler of *job* for a run (*repositories*: only those; None: the whole selection): a row
        of ``serve_triggers``, or one more on the row of the same reason and repositories. Returns how many
        triggers now wait, or None when `MAX_PENDING_TRIGGERS` rows wait already (nothing was added).

        *deliveries*: the keys of a webhook delivery (its id, its signature); if one was remembered before,
        nothing is added and the result is 0; else they are remembered in the same transaction (the newest
        *remember* of the job are kept)."""
        repos = json.dumps(sorted(repositories)) if repositories is not None else None
        try:
            return self._add_trigger(job, reason, repos, replica, deliveries, remember)
        except _NotAdded as e:
            return e.result

    def _add_trigger(
        self, job: str, reason: str, repos: str | None, replica: str, deliveries: Sequence[str], remember: int
    ) -> int | None:
        with self._guard("add a trigger"), self._write():
            if deliveries:
                now = _to_text(_now())
                added = 0
                for key in deliveries:
                    added += self._conn.execute(
                        "INSERT INTO serve_deliveries (job, delivery, seen) VALUES (?, ?, ?) "
                        "ON CONFLICT (job, delivery) DO NOTHING",
                        (job, key, now),
                    ).rowcount
                if added < len(deliveries):  # seen before (rolled back: the new keys are not kept either)
                    raise _NotAdded(0)
                kept = int(
                    self._conn.execute("SELECT COUNT(*) FROM serve_deliveries WHERE job = ?", (job,)).fetchone()[0]
                )
                if kept > remember:
                    self._conn.execute(
                        "DELETE FROM serve_deliveries WHERE job = ? AND delivery IN (SELECT delivery FROM "
                        "serve_deliveries WHERE job = ? ORDER BY seen, delivery LIMIT ?)",
                        (job, job, kept - remember),
                    )
            same = self._conn.execute(
                "SELECT id FROM serve_triggers WHERE job = ? AND reason = ? AND "
                + ("repositories IS NULL" if repos is None else "repositories = ?")
                + " ORDER BY id LIMIT 1",
                (job, reason) if repos is None else (job, reason, repos),
            ).fetchone()
            if same is not None:
                self._conn.execute("UPDATE serve_triggers SET triggers = triggers + 1 WHERE id = ?", (same[0],))
            else:
                rows = self._conn.execute("SELECT COUNT(*) FROM serve_triggers WHERE job = ?", (job,)).fetchone()[0]
                if int(rows) >= MAX_PENDING_TRIGGERS:
                    raise _NotAdded(None)  # nor are its deliveries remembered: a retry may get in
                self._conn.execute(
                    "INSERT INTO serve_triggers (job, reason, repositories, replica, created) VALUES (?, ?, ?, ?, ?)",
                    (job, reason, repos, replica, _to_text(_now())),
                )
            total = self._conn.execute(
                "SELECT COALESCE(SUM(triggers), 0) FROM serve_triggers WHERE job = ?", (job,)
            ).fetchone()[0]
        return int(total)

    def pending_triggers(self, job: str) -> list[tuple[str, list[str] | None, int]]:
        """The triggers of *job* waiting for the scheduler, oldest first: (reason, repositories, how many)."""
        with self._guard("read triggers"):
            rows = self._conn.execute(
                "SELECT reason, repositories, triggers FROM serve_triggers WHERE job = ? ORDER BY id", (job,)
            ).fetchall()
        return [(str(r[0]), json.loads(r[1]) if r[1] is not None else None, int(r[2])) for r in rows]

    def take_triggers(self, job: str) -> list[tuple[str, list[str] | None, int]]:
        """`pending_triggers`, removed in the same transaction (the scheduler's next run takes them)."""
        with self._guard("take triggers"), self._write():
            rows = self._conn.execute(
                "SELECT id, reason, repositories, triggers FROM serve_triggers WHERE job = ? ORDER BY id", (job,)
            ).fetchall()
            if rows:
                self._conn.execute("DELETE FROM serve_triggers WHERE job = ? AND id <= ?", (job, rows[-1][0]))
        return [(str(r[1]), json.loads(r[2]) if r[2] is not None else None, int(r[3])) for r in rows]

    @staticmethod
    def _serve_lock(job: str) -> tuple[int, int]:
        """The scheduler lock of *job*: its two keys as ``pg_locks`` shows them (``classid``, ``objid``)."""
        return _PG_SERVE_LOCK, zlib.crc32(job.encode())

    def lead_scheduler(self, job: str, replica: str, *, keepalive: int = 10) -> bool:
        """Try to become the scheduler of *job* (PostgreSQL: a session advisory lock on this state's connection,
        which the server drops when the connection does; SQLite: always True, one process). The connection is
        then named after *replica* (`scheduler`), and the server probes it every *keepalive* seconds (TCP
        keepalives: a lost node's lock is dropped within about three times that)."""
        if not self._pg:
            return True
        hi, lo = self._serve_lock(job)
        with self._guard("elect the scheduler"):
            signed = lo - (1 << 32) if lo >= 1 << 31 else lo  # the function takes int4; pg_locks shows an oid
            sql = "SELECT pg_try_advisory_lock(?::integer, ?::integer)"
            got = bool(self._conn.execute(sql, (hi, signed)).fetchone()[0])
            if got:
                self._conn.execute(
                    "SELECT set_config('application_name', ?, false)", (f"hubmirror serve {replica}"[:63],)
                )
                for name, value in (("idle", keepalive), ("interval", max(1, keepalive // 2)), ("count", 3)):
                    self._conn.execute(f"SELECT set_config('tcp_keepalives_{name}', ?, false)", (str(value),))
        return got

    def leads_scheduler(self, job: str) -> bool:
        """Whether this state's connection holds the scheduler lock of *job* (a round trip: `StateError` when
        the connection is gone, and with it the lock)."""
        if not self._pg:
            return True
        hi, lo = self._serve_lock(job)
        with self._guard("check the scheduler lock"):
            row = self._conn.execute(
                "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() "
                "AND classid::bigint = ? AND objid::bigint = ? AND objsubid = 2 AND granted",
                (hi, lo),
            ).fetchone()
        return bool(row[0])

    def scheduler(self, job: str) -> str | None:
        """The name of the connection that schedules *job* (``hubmirror serve REPLICA``), or None if none does."""
        if not self._pg:
            return None
        hi, lo = self._serve_lock(job)
        with self._guard("find the scheduler"):
            row = self._conn.execute(
                "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.classid::bigint = ? AND l.objid::bigint = ? "
                "AND l.objsubid = 2 AND l.granted",
                (hi, lo),
            ).fetchone()
        if row is None:
            return None
        name = str(row[0] or "")
        return name.removeprefix("hubmirror serve ") or "another process"

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
        """The official-images commit last synced completely (no deferral) from *library* (its URL/path;
        recorded under the URL without credentials, `redact_url`)."""
        return self.get_meta(_LIBRARY_COMMIT_KEY + redact_url(library))

    def set_library_commit(self, library: str, commit: str) -> None:
        """Record *commit* as synced; call only when the run did the library part without deferral."""
        self.set_meta(_LIBRARY_COMMIT_KEY + redact_url(library), commit)

    def library_commits(self) -> dict[str, str]:
        """Every library source → the commit last synced completely from it."""
        with self._guard("read meta"):
            rows = self._conn.execute(
                "SELECT key, value FROM meta WHERE key LIKE ?", (_LIBRARY_COMMIT_KEY + "%",)
            ).fetchall()
        return {k[len(_LIBRARY_COMMIT_KEY) :]: v for k, v in rows if v is not None}

    def overview(self, runs: int = 5) -> dict[str, Any]:
        """What ``hubmirror status`` shows: tags tracked, the jobs and what each owns, libraries synced,
        deferred work, latest runs."""
        tags = self.tags()
        unowned = self.unowned_tags()
        return {
            "state": self.where,
            "tags": len(tags),
            "tags_created": sum(1 for t in tags if t.created_by_hubmirror),
            "repositories": len({t.dest_repo for t in tags}),
            "jobs": [_job_overview(j) for j in self.jobs()],
            "unowned": {
                "tags": len(unowned),
                "owned": _owned_by_repo((t.dest_repo, t.tag) for t in unowned),
            },
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
            **({"work": self.work_in_progress(now=time.time())} if self.cooperative else {}),
            "runs": [
                {
                    "id": r.id,
                    "started": _to_text(r.started),
                    "finished": _to_text(r.finished) if r.finished else None,
                    "status": r.status,
                    "commit": r.commit,
                    "job": r.job,
                    "summary": r.summary,
                }
                for r in self.runs(runs)
            ],
        }


def _owned_by_repo(keys: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """(dest_repo, tag) pairs as repository → its tags."""
    out: dict[str, list[str]] = {}
    for repo, tag in keys:
        out.setdefault(repo, []).append(tag)
    return out


def _job_overview(job: JobInfo) -> dict[str, Any]:
    run = job.last_run
    return {
        "name": job.name,
        "tags": len(job.tags),
        "owned": _owned_by_repo(job.tags),
        "last_run": None
        if run is None
        else {
            "id": run.id,
            "started": _to_text(run.started),
            "finished": _to_text(run.finished) if run.finished else None,
            "status": run.status,
        },
    }


class AsyncState:
    """`State` for the event loop: the same calls, each run on the state's worker thread (`State.run`).

    Only what the sync needs is here; anything else is ``await state.run(state.method, ...)``.
    """

    def __init__(self, state: State) -> None:
        self._state = state

    @contextlib.asynccontextmanager
    async def lock(self) -> AsyncIterator[None]:
        """`State.lock`, taken and released on the state's worker thread (a PostgreSQL advisory lock is a
        round trip to the server)."""
        held: list[contextlib.AbstractContextManager[None]] = []

        def enter() -> None:  # a new context each time `run` makes the call again (a lost connection)
            cm = self._state.lock()
            cm.__enter__()
            held.append(cm)

        await self._state.run(enter)
        try:
            yield
        finally:
            await self._state.run(held[0].__exit__, None, None, None)

    async def tag(self, dest_repo: str, tag: str) -> TagRecord | None:
        return await self._state.run(self._state.tag, dest_repo, tag)

    async def tags(
        self, dest_repo: str | None = None, *, source_ref: str | None = None, prefix: str | None = None
    ) -> list[TagRecord]:
        return await self._state.run(self._state.tags, dest_repo, source_ref=source_ref, prefix=prefix)

    async def record_tags(self, records: Iterable[TagRecord], *, job: str | None = None) -> None:
        await self._state.run(self._state.record_tags, list(records), job=job)

    async def forget_tag(self, dest_repo: str, tag: str) -> bool:
        return await self._state.run(self._state.forget_tag, dest_repo, tag)

    async def claim_tags(self, job: str, keys: Iterable[tuple[str, str]]) -> int:
        return await self._state.run(self._state.claim_tags, job, list(keys))

    async def release_tags(self, job: str, keys: Iterable[tuple[str, str]]) -> int:
        return await self._state.run(self._state.release_tags, job, list(keys))

    async def tag_owners(self, *, prefix: str | None = None) -> dict[tuple[str, str], frozenset[str]]:
        return await self._state.run(self._state.tag_owners, prefix=prefix)

    async def record_deletion(
        self, dest_repo: str, tag: str, digest: str, how: str, *, run_id: int | None = None
    ) -> None:
        await self._state.run(self._state.record_deletion, dest_repo, tag, digest, how, run_id=run_id)

    async def deletions(self, *, prefix: str | None = None, since: datetime | None = None) -> list[Deletion]:
        return await self._state.run(self._state.deletions, prefix=prefix, since=since)

    async def children_checked(self, prefix: str) -> datetime | None:
        return await self._state.run(self._state.children_checked, prefix)

    async def set_children_checked(self, prefix: str, when: datetime) -> None:
        await self._state.run(self._state.set_children_checked, prefix, when)

    async def defer(self, source_ref: str, dest_repo: str, tags: Sequence[str], reason: str) -> DeferredItem:
        return await self._state.run(self._state.defer, source_ref, dest_repo, list(tags), reason)

    async def deferred(self) -> list[DeferredItem]:
        return await self._state.run(self._state.deferred)

    async def clear_deferred(self, source_ref: str, dest_repo: str) -> bool:
        return await self._state.run(self._state.clear_deferred, source_ref, dest_repo)

    async def clear_deferred_many(self, items: Iterable[tuple[str, str]]) -> int:
        return await self._state.run(self._state.clear_deferred_many, list(items))

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

    async def note_changes(self, changes: Iterable[PendingChange]) -> None:
        await self._state.run(self._state.note_changes, list(changes))

    async def settle_changes(self, dest_repo: str, tags: Sequence[str]) -> list[PendingChange]:
        return await self._state.run(self._state.settle_changes, dest_repo, list(tags))

    async def pending_changes(self, *, prefix: str | None = None) -> list[PendingChange]:
        return await self._state.run(self._state.pending_changes, prefix=prefix)

    async def set_change_reasons(self, reasons: Mapping[tuple[str, str], str]) -> None:
        await self._state.run(self._state.set_change_reasons, dict(reasons))

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
_CHANGE_COLUMNS = "dest_repo, tag, upstream_digest, changed_at, seen_at, reason"


def _change(row: Sequence[Any]) -> PendingChange:
    return PendingChange(row[0], row[1], row[2], _from_text(row[3]), _from_text(row[4]), row[5])


_RUN_COLUMNS = 'id, started, finished, status, "commit", summary, job'

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


def _run_record(row: Sequence[Any]) -> RunRecord:
    return RunRecord(
        id=row[0],
        started=_from_text(row[1]),
        finished=_from_text(row[2]) if row[2] else None,
        status=row[3],
        commit=row[4],
        summary=json.loads(row[5]) if row[5] else {},
        job=row[6],
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


class _ConnectionLost(StateError):
    """A PostgreSQL call failed because the connection was lost; `State.run` makes it again."""

    def __init__(self, where: str, what: str, detail: str) -> None:
        super().__init__(f"{where}: {what} failed: lost the connection to the state database ({detail})")
        self.detail = detail


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _is_psycopg_error(e: BaseException) -> bool:
    import psycopg  # loaded already: only a PostgreSQL state gets here

    return isinstance(e, psycopg.Error)


def _split_sql(script: str) -> list[str]:
    """Statements of a migration script (ours: no semicolons inside strings)."""
    return [s.strip() for s in script.split(";") if s.strip()]


__all__ = [
    "MAX_PENDING_TRIGGERS",
    "RUN_STATUSES",
    "SCHEMA_VERSION",
    "AsyncState",
    "DeferredItem",
    "Deletion",
    "JobInfo",
    "PendingChange",
    "RunRecord",
    "State",
    "StateError",
    "StateLocation",
    "StateLocked",
    "StateUnavailable",
    "TagRecord",
]
