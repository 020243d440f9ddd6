"""A PostgreSQL state whose connection is lost (issue 15 item 7): the server ends the session
(``pg_terminate_backend``, as a restart does), and `State.run` makes the call again on a new connection; a
transaction cut off is made whole once; the sync lock is taken again (or the call stops when another sync
took it meanwhile); a server that does not come back within the window is `StateUnavailable` in one line
naming the host, never the password; a commit whose answer was lost is looked up, not made twice."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import psycopg
import pytest

from hubmirror import StateError, StateLocked, StateUnavailable
from hubmirror.state import State, TagRecord, _now
from hubmirror.testing.postgres import PostgresServer

REPO = "127.0.0.1:5000/mirror/python"
D1 = "sha256:" + "1" * 64


@pytest.fixture
def where(postgres: PostgresServer) -> str:
    return postgres.new_database()


@pytest.fixture
def admin(postgres: PostgresServer) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A connection of the test's own, to the ``postgres`` database, to end the state's sessions."""
    with psycopg.connect(postgres.url(), autocommit=True) as conn:
        yield conn


def _db(where: str) -> str:
    return where.rsplit("/", 1)[1]


def _end_sessions(admin: psycopg.Connection[tuple[object, ...]], where: str) -> int:
    """End every session on the state's database, as a server restart does; how many there were."""
    rows = admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
        (_db(where),),
    ).fetchall()
    return len(rows)


def _record(tag: str) -> TagRecord:
    return TagRecord(REPO, tag, f"docker.io/library/python:{tag}", D1, D1, _now())


def test_a_call_after_the_session_ended_is_made_on_a_new_connection(
    where: str, admin: psycopg.Connection[tuple[object, ...]]
) -> None:
    with State.open(where) as st:
        st.record_tags([_record("a")])
        assert _end_sessions(admin, where) == 1

        async def calls() -> None:
            await st.aio.record_tags([_record("b")])  # a write, then a read, each on the new connection
            assert {r.tag for r in await st.aio.tags()} == {"a", "b"}

        asyncio.run(calls())
        # A direct call (no `run`: `hubmirror status`) fails once, in one line, and the next reconnects.
        assert _end_sessions(admin, where) == 1
        with pytest.raises(StateError, match="lost the connection to the state database") as exc:
            st.tags()
        assert "\n" not in str(exc.value)
        assert {r.tag for r in st.tags()} == {"a", "b"}


def test_a_transaction_cut_off_is_made_whole_once(where: str, admin: psycopg.Connection[tuple[object, ...]]) -> None:
    with State.open(where) as st:
        assert st.take_pulls("q", 1, worker="w", run_id=1, remaining=100, observed_at=1.0, reserve=0, now=1.0) == 1
        with psycopg.connect(where, autocommit=True) as other:
            other.execute("BEGIN")
            other.execute("SELECT * FROM pull_quota WHERE quota_key = 'q' FOR UPDATE")  # take_pulls waits on it

            async def take() -> int:
                task = asyncio.ensure_future(
                    st.run(
                        st.take_pulls, "q", 5, worker="w", run_id=1, remaining=100, observed_at=1.0, reserve=0, now=2.0
                    )
                )
                deadline = time.monotonic() + 60
                while not admin.execute(  # the state's transaction is under way, waiting on the row
                    "SELECT 1 FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'", (_db(where),)
                ).fetchall():
                    assert time.monotonic() < deadline, "take_pulls never waited on the row"
                    await asyncio.sleep(0.05)
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND "
                    "wait_event_type = 'Lock'",
                    (_db(where),),
                )
                other.execute("ROLLBACK")
                return await task

            assert asyncio.run(take()) == 5
        # The transaction cut off was rolled back and made again once: 1 + 5 pulls out, not 1 + 5 + 5.
        assert st.pull_quota("q") == (100 - 6, 6)


def test_the_sync_lock_is_taken_again_on_the_new_connection(
    where: str, admin: psycopg.Connection[tuple[object, ...]]
) -> None:
    with State.open(where) as a:
        with a.lock():
            _end_sessions(admin, where)  # a's lock went with its session
            asyncio.run(a.run(a.tags))  # a reconnects and takes the lock again
            with State.open(where) as b, pytest.raises(StateLocked), b.lock():
                pass
        with State.open(where) as b, b.lock():  # released with a's block
            pass


def test_a_sync_lock_taken_by_another_meanwhile_stops_the_holder(
    where: str, admin: psycopg.Connection[tuple[object, ...]]
) -> None:
    with State.open(where) as a, a.lock():
        _end_sessions(admin, where)
        with (
            State.open(where) as b,
            b.lock(),  # b takes the lock a lost with its session
            pytest.raises(StateLocked, match="another sync took it meanwhile"),
        ):
            asyncio.run(a.run(a.tags))


def test_a_server_that_does_not_come_back_is_one_line_within_the_window(
    where: str, postgres: PostgresServer, admin: psycopg.Connection[tuple[object, ...]]
) -> None:
    db = _db(where)
    with State.open(where) as st:
        st.record_tags([_record("a")])
        st.reconnect_window = 2.0
        admin.execute(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS false')  # nobody may connect: as if away
        try:
            _end_sessions(admin, where)
            began = time.monotonic()
            with pytest.raises(StateUnavailable) as exc:
                asyncio.run(st.aio.record_tags([_record("b")]))
            took = time.monotonic() - began
            message = str(exc.value)
            assert 2.0 <= took < 30, took
            assert "\n" not in message
            assert f"127.0.0.1:{postgres.port}" in message and "did not come back within 2 s" in message
            assert postgres.password not in message
        finally:
            admin.execute(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS true')
        # Back: the next call reconnects; what was recorded before is there, the write that failed is not.
        assert {r.tag for r in asyncio.run(st.aio.tags())} == {"a"}


def test_a_commit_whose_answer_was_lost_is_looked_up(where: str) -> None:
    with State.open(where) as st, st._guard("test"):
        conn = st._pgconn
        xids = []
        for end in ("COMMIT", "ROLLBACK"):
            conn.execute("BEGIN")
            xids.append(int(conn.execute("SELECT txid_current()").fetchone()[0]))
            conn.execute(end)
        assert st._committed(xids[0], "lost") is True
        assert st._committed(xids[1], "lost") is False


def test_the_async_lock_is_taken_on_a_new_connection(where: str, admin: psycopg.Connection[tuple[object, ...]]) -> None:
    with State.open(where) as st:
        st.tags()
        _end_sessions(admin, where)  # found lost by the lock's own statement: taken again, on a new connection

        async def hold() -> None:
            async with st.aio.lock():
                with State.open(where) as other, pytest.raises(StateLocked), other.lock():
                    pass

        asyncio.run(hold())
        with State.open(where) as other, other.lock():  # released
            pass
