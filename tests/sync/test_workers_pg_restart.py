"""Workers on a PostgreSQL state whose server restarts or goes away mid-run (issue 15 item 7): from the
command line, with a real PostgreSQL server, the Hub emulator and a real destination registry.

Restarted while three workers copy (twice: once while they wait on blobs, once while they record), the
workers reconnect and finish the run: exit 0, every tag right, the run recorded completed once. Stopped and
not brought back, each worker exits 1 within its reconnect window with one line naming the server (no
password, no traceback); started again, the next run finishes everything and nothing recorded before is
lost.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from test_sync_support import Env
from test_workers import REPOS, assert_every_tag_right, log_of, reports, repos_library, start_workers, wait_all

from hubmirror.state import State
from hubmirror.testing.postgres import PostgresServer


def _wait_for(where: str, what: str, check: Callable[[State], bool], timeout: float = 120) -> None:
    """Poll the state until *check* holds (a loaded machine: no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with State.open(where) as st:
                if check(st):
                    return
        except Exception:  # the first worker may still be creating the schema
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _all_claimed(n: int) -> Callable[[State], bool]:
    """*n* workers have joined the run and every repository is claimed (4 per worker at most: two hold
    them, the third waits for one to be left)."""

    def check(st: State) -> bool:
        work = st.work_in_progress(now=time.time())
        if not work or len(work[0]["workers"]) < n:
            return False
        return {status for _, status, _, _ in st.work_units(work[0]["run"])} == {"claimed"}

    return check


def _recorded(n: int) -> Callable[[State], bool]:
    return lambda st: len(st.tags()) >= n


def _snapshot(where: str) -> dict[tuple[str, str], Any]:
    with State.open(where) as st:
        return {(r.dest_repo, r.tag): r.dest_digest for r in st.tags()}


def test_workers_reconnect_when_postgresql_restarts_mid_run(env: Env, postgres: PostgresServer) -> None:
    env.commit(repos_library())
    env.seed()
    env.hub.set_delay(3600)  # every blob held: the three workers are mid-copy when the server restarts
    where = postgres.new_database()

    workers = start_workers(env, where, 3)
    _wait_for(where, "three workers joined and every repository claimed", _all_claimed(3))
    postgres.restart()  # every worker's connection is cut while it waits on blobs
    env.hub.set_delay(0.2)
    _wait_for(where, "a first tag recorded", _recorded(1))
    postgres.restart()  # again while they record (statements in flight, transactions cut off)
    codes = wait_all(workers, timeout=300)

    assert codes == [0, 0, 0], [log_of(env, i) for i in range(3)]
    assert_every_tag_right(env)
    with State.open(where) as st:
        runs = st.runs()
        assert [r.status for r in runs] == ["completed"]  # one run, recorded once
        assert len(st.tags()) == 4 * REPOS
        assert st.intents() == []  # every push recorded
        assert {u[1] for u in st.work_units(runs[0].id)} == {"done"}
        assert st.work_in_progress(now=time.time()) == []  # the run was closed
    reps = reports(workers)
    assert len(reps) == 3 and sum(1 for r in reps if r["run"]["closer"]) == 1
    assert all(r["run"]["status"] == "completed" for r in reps)


def test_workers_exit_with_one_line_when_postgresql_does_not_come_back(env: Env, postgres: PostgresServer) -> None:
    env.commit(repos_library())
    env.seed()
    env.hub.set_delay(0.5)
    where = postgres.new_database()

    workers = start_workers(env, where, 3, lease="5s")  # waits up to two leases (10 s) for the server
    try:
        _wait_for(where, "some tags recorded", _recorded(4))
        env.hub.set_delay(3600)  # the rest held: workers busy with transfers stop too (their heartbeat)
        before = _snapshot(where)
        postgres.stop()
        stopped = time.monotonic()
        codes = wait_all(workers, timeout=120)
        took = time.monotonic() - stopped
    finally:
        if postgres.process is None:
            postgres.start()

    assert codes == [1, 1, 1], [log_of(env, i) for i in range(3)]
    assert took < 90, took  # the window (10 s), then each worker gives up at once
    for i in range(3):
        log = log_of(env, i)
        lines = [line for line in log.splitlines() if line.strip()]
        # (the phase lines before it: "reading the library …", "worker … on run 1", what each repository needs)
        problems = [line for line in lines if line.startswith(("error", "WARNING", "ERROR", " "))]
        assert problems == [lines[-1]], log
        assert lines[-1].startswith("error: ") and f"127.0.0.1:{postgres.port}" in lines[-1], log
        assert postgres.password not in log
        assert "Traceback" not in log

    # The server is back: the next run finishes everything, and nothing recorded before was lost.
    env.hub.set_delay(0)
    again = start_workers(env, where, 3, lease="5s")
    assert wait_all(again, timeout=300) == [0, 0, 0], [log_of(env, i) for i in range(3)]
    assert_every_tag_right(env)
    after = _snapshot(where)
    assert before.items() <= after.items()
    assert len(after) == 4 * REPOS
    with State.open(where) as st:
        assert st.intents() == []
        statuses = [r.status for r in st.runs()]
        assert statuses[0] == "completed" and set(statuses[1:]) <= {"interrupted"}, statuses
