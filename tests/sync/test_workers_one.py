"""One worker on a PostgreSQL state does what a sync on SQLite does (the budget's deferral and the resume,
deferred work that left the selection, the same selection step and check step), and closes the run when asked
to stop; in process."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest
from test_sync_budget import ENTRIES, gets, quota_429s
from test_sync_estimates import official, within
from test_sync_support import Env, manifests_of, many_library
from test_workers import assert_every_tag_right, repos_library

from hubmirror._errors import HubmirrorError
from hubmirror.plan import WorkItem
from hubmirror.report import Outcome
from hubmirror.state import State
from hubmirror.sync import RunControl, SyncEvents, run_sync
from hubmirror.testing import images as img
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


class Phases(SyncEvents):
    def __init__(self) -> None:
        self.lines: list[str] = []

    def phase(self, text: str) -> None:
        self.lines.append(text)


async def test_a_worker_estimates_an_image_list_with_the_tags_api_as_a_sync_does(
    env: Env, postgres: PostgresServer, tmp_path: Path
) -> None:
    where = postgres.new_database()
    names = ("alpha", "beta", "gamma")
    for name in names:
        img.push_sync(env.hub.upstream, f"library/{name}", official(name), ["1.0", "latest"])
    listing = tmp_path / "images.txt"
    listing.write_text("".join(f"docker.io/library/{n}:1.0\n" for n in names))
    events = Phases()

    no_library = str(tmp_path / "none")
    _, report = await env.sync(events, state=where, list=str(listing), hub_api=env.hub.url, library=no_library)

    assert report.exit_code == 0, report.to_json()
    for name in names:  # the worker's check asked the tags API how many images each entry has (no pull)
        assert env.hub.tags_api_requests(f"library/{name}") == 1
    estimated = [int(m[1]) for line in events.lines if (m := re.search(r"to retag, ~(\d+) pulls$", line))]
    assert len(estimated) == len(names), events.lines
    assert within(sum(estimated), report.totals.manifest_gets), (estimated, report.totals.manifest_gets)


async def test_a_worker_with_an_unreachable_destination_says_so_before_it_joins_a_run(
    env: Env, postgres: PostgresServer
) -> None:
    where = postgres.new_database()
    env.seed()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dest = f"127.0.0.1:{sock.getsockname()[1]}/mirror"

    with pytest.raises(HubmirrorError, match=f"^destination {re.escape(dest)}: .*nothing was done$"):
        await env.sync(state=where, dest=dest)

    assert env.hub.manifest_heads() == 0 and env.hub.manifest_gets() == 0
    with State.open(where) as st:
        assert st.runs() == []
