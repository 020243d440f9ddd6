"""The pull budget against the Hub emulator (wait for the window, give up after max_wait), and daemon mode's
schedule loop. Waiting is driven by an injected sleep that moves the emulator's quota window: no real sleeps."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from hubmirror import BudgetExhausted, ConfigError
from hubmirror.budget import PullBudget
from hubmirror.schedule import next_run, run_on_schedule
from hubmirror.store.registry import RegistryStore
from hubmirror.testing import images as img
from hubmirror.testing.hub import HubEmulator


async def _budget(hub: HubEmulator, store: RegistryStore, *, wait: bool, refill: bool, max_wait: float = 3600):
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        if refill:
            hub.refill()  # the 6-hour window passes while we "sleep"

    async def probe() -> None:
        await store.head_manifest("library/tiny", "1")

    budget = PullBudget(
        lambda: store.ratelimit, reserve=5, wait=wait, max_wait=max_wait, probe=probe, poll_interval=300, sleep=sleep
    )
    return budget, slept


@pytest.fixture
async def tiny(hub: HubEmulator):  # type: ignore[no-untyped-def]
    index = await img.push(hub.upstream, "library/tiny", img.index("tiny", ["linux/amd64"]), ["1"])
    store = RegistryStore(hub.host)
    hub.set_limit(100, remaining=7)  # 2 pulls above the reserve of 5
    await store.head_manifest("library/tiny", "1")  # free: learns the quota
    yield index, store
    await store.close()


async def test_without_wait_the_budget_stops_at_the_reserve_and_says_why(hub: HubEmulator, tiny) -> None:  # type: ignore[no-untyped-def]
    index, store = tiny
    budget, slept = await _budget(hub, store, wait=False, refill=False)
    for _ in range(2):
        await budget.acquire()
        await store.get_manifest("library/tiny", index.digest)
    with pytest.raises(BudgetExhausted, match="5 left, keeping a reserve of 5"):
        await budget.acquire()
    assert hub.remaining == 5 and slept == []
    assert not [c for c in hub.counts if c[3] == 429]


async def test_with_wait_it_polls_with_free_heads_until_the_window_refills(hub: HubEmulator, tiny) -> None:  # type: ignore[no-untyped-def]
    index, store = tiny
    budget, slept = await _budget(hub, store, wait=True, refill=True)
    heads_before = hub.manifest_heads()
    for _ in range(4):  # two more than the first window allows
        await budget.acquire()
        await store.get_manifest("library/tiny", index.digest)
    assert slept == [300]  # one poll interval, then the probe saw the new window
    assert budget.waited == 300
    assert hub.manifest_heads() == heads_before + 1  # the probe is a HEAD: free
    assert hub.manifest_gets() == 4 and hub.remaining == 98


async def test_with_wait_it_gives_up_after_max_wait(hub: HubEmulator, tiny) -> None:  # type: ignore[no-untyped-def]
    index, store = tiny
    budget, slept = await _budget(hub, store, wait=True, refill=False, max_wait=900)
    await budget.acquire(2)
    await store.get_manifest("library/tiny", index.digest)
    await store.get_manifest("library/tiny", index.digest)
    with pytest.raises(BudgetExhausted):
        await budget.acquire()
    assert sum(slept) == pytest.approx(900, abs=1)


def test_schedule_runs_the_job_then_sleeps_until_the_next_cron_time() -> None:
    clock = [datetime(2026, 11, 27, 10, 3, 0)]
    codes: list[tuple[int, datetime]] = []
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += timedelta(seconds=seconds)

    runs = iter([0, 75, 0])
    result = run_on_schedule(
        "17 */6 * * *",
        lambda: next(runs),
        on_wait=lambda code, nxt: codes.append((code, nxt)),
        sleep=sleep,
        now=lambda: clock[0],
        runs=3,
    )
    assert result == 0
    assert [c for c, _ in codes] == [0, 75]
    assert [n for _, n in codes] == [datetime(2026, 11, 27, 12, 17), datetime(2026, 11, 27, 18, 17)]
    assert slept == [2 * 3600 + 14 * 60, 6 * 3600]


def test_schedule_stops_cleanly_on_interrupt_and_rejects_a_bad_expression() -> None:
    def interrupted(seconds: float) -> None:
        raise KeyboardInterrupt

    assert run_on_schedule("*/5 * * * *", lambda: 1, sleep=interrupted) == 0
    with pytest.raises(ConfigError, match="not a valid cron expression"):
        next_run("every hour", datetime(2026, 1, 1))


def test_allowance_is_quota_minus_reserve_capped_by_max_pulls() -> None:
    from hubmirror.budget import allowance

    assert allowance(20, reserve=5, max_pulls=None) == 15
    assert allowance(20, reserve=5, max_pulls=4) == 4
    assert allowance(3, reserve=5, max_pulls=None) == 0  # never negative
    assert allowance(None, reserve=5, max_pulls=7) == 7  # the source reports no quota
    assert allowance(None, reserve=5, max_pulls=None) is None  # unlimited
