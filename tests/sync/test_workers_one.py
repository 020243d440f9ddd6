"""One worker on a PostgreSQL state does what a sync on SQLite does (the budget's deferral and the resume,
deferred work that left the selection), and closes the run when asked to stop; in process."""

from __future__ import annotations

from test_sync_budget import ENTRIES, gets, quota_429s
from test_sync_support import Env, manifests_of, many_library
from test_workers import assert_every_tag_right, repos_library

from hubmirror.plan import WorkItem
from hubmirror.report import Outcome
from hubmirror.state import State
from hubmirror.sync import RunControl, SyncEvents, run_sync
from hubmirror.testing.postgres import PostgresServer


async def test_one_worker_defers_what_the_quota_does_not_allow_and_the_next_run_finishes(
    env: Env, postgres: PostgresServer
) -> None:
    where = postgres.new_database()
    env.commit({"pyish": "", "tiny": "", **many_library(ENTRIES)})
    env.seed()
    total = set().union(*(manifests_of(ix) for ix in env.indexes("many").values()))
    env.hub.set_limit(100, remaining=20)

    _, first = await env.sync(state=where)

    assert first.exit_code == 75
    assert quota_429s(env) == 0
    spent = gets(env)
    assert 0 < len(spent) <= 20 - 5
    deferred = [t for i in first.by_outcome(Outcome.DEFERRED) for t in i.tags]
    assert deferred
    with State.open(where) as st:
        assert sorted(t for d in st.deferred() for t in d.tags) == sorted(deferred)
        assert [r.status for r in st.runs()] == ["deferred"]

    env.hub.refill()
    env.hub.reset_counts()
    _, second = await env.sync(state=where)

    assert second.exit_code == 0, second.to_json()
    assert quota_429s(env) == 0
    again = gets(env)
    assert len(again) == 60 - len(spent) and set(again) | set(spent) == total
    with State.open(where) as st:
        assert st.deferred() == []
        assert [r.status for r in st.runs()] == ["completed", "deferred"]


async def test_deferred_work_for_an_image_that_left_the_selection_is_forgotten(
    env: Env, postgres: PostgresServer
) -> None:
    where = postgres.new_database()
    env.seed()
    _, first = await env.sync(state=where, max_pulls=1)
    assert first.exit_code == 75
    with State.open(where) as st:
        assert {d.source_ref.split(":")[0] for d in st.deferred()} >= {"docker.io/library/tiny"}

    _, second = await env.sync(state=where, images=["pyish"])

    assert second.exit_code == 0, second.to_json()
    with State.open(where) as st:
        assert st.deferred() == []


class StopAtFirstCopy(SyncEvents):
    def __init__(self, control: RunControl) -> None:
        self.control = control

    def item_started(self, item: WorkItem) -> None:
        self.control.stop("stopped by the test")


async def test_a_worker_asked_to_stop_closes_the_run_as_deferred_when_no_other_is_left(
    env: Env, postgres: PostgresServer
) -> None:
    where = postgres.new_database()
    env.commit(repos_library())  # 6 repositories: more than a worker's 4 lanes
    env.seed()
    control = RunControl()

    _, first = await run_sync(env.config(state=where), events=StopAtFirstCopy(control), control=control)

    assert first.exit_code == 75, first.to_json()
    assert any("repositories left" in (i.reason or "") for i in first.by_outcome(Outcome.DEFERRED))
    with State.open(where) as st:
        assert [r.status for r in st.runs()] == ["deferred"]  # closed by the worker stopping, not left running
        assert st.work_in_progress(now=0) == []

    _, second = await env.sync(state=where)
    assert second.exit_code == 0, second.to_json()
    assert_every_tag_right(env)
