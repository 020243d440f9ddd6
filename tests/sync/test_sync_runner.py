"""The sync's runner (issue 8): deferred work keeps its priority when a run dies, and items run under one
`asyncio.TaskGroup`, so an unexpected failure stops the others before the state and stores are closed."""

from __future__ import annotations

import asyncio

import pytest
from test_sync_support import Env, env_fixture  # noqa: F401  (env_fixture: the `env` fixture)

from hubmirror.plan import Plan, WorkItem
from hubmirror.report import Outcome
from hubmirror.state import State
from hubmirror.sync import SyncEvents


class Crash(Exception):
    """Stands for the process dying (a bug, a kill) at one point of a run."""


class DiesWhenCopyingStarts(SyncEvents):
    def plan_ready(self, plan: Plan) -> None:
        raise Crash("the run died as the copies started")


async def test_deferred_work_keeps_its_priority_when_the_next_run_dies(env: Env) -> None:
    env.seed()
    _, first = await env.sync(max_pulls=1)
    assert first.exit_code == 75
    with State.open(env.state_path) as state:
        before = {(d.source_ref, d.dest_repo, d.tags, d.since) for d in state.deferred()}
    assert before

    with pytest.raises(Crash):
        await env.sync(DiesWhenCopyingStarts())

    with State.open(env.state_path) as state:
        assert {(d.source_ref, d.dest_repo, d.tags, d.since) for d in state.deferred()} == before
    _, last = await env.sync()
    assert last.exit_code == 0, last.to_json()
    with State.open(env.state_path) as state:
        assert state.deferred() == []


class FailsOnFirstDone(SyncEvents):
    """An unexpected error (not a registry's) while the first item is recorded; the others are in flight."""

    def __init__(self) -> None:
        self.done = 0

    def item_done(self, item: WorkItem, outcome: Outcome) -> None:
        self.done += 1
        if self.done == 1:
            raise Crash(f"bug while recording {item.canonical}")


async def test_an_unexpected_error_in_one_item_stops_the_others_before_the_run_ends(env: Env) -> None:
    env.seed()

    with pytest.raises(Crash):  # the error itself, not a group of them
        await env.sync(FailsOnFirstDone(), concurrency=4)

    # Nothing of the run is left running behind the closed state and stores.
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]
    assert others == []
    _, again = await env.sync()
    assert again.exit_code == 0, again.to_json()
