"""Claims, leases and the shared pull quota in the state (`State.join_run` … `State.take_pulls`), on both
backends (the sync uses them on PostgreSQL only; the SQL is written once); the blobs workers claim and
place (`State.claim_blob` …, `BlobClaims`); a `PullBudget` with a pool grants only pulls taken from it."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from hubmirror._errors import BudgetExhausted
from hubmirror.budget import PullBudget
from hubmirror.registry.ratelimit import RateLimit
from hubmirror.state import State
from hubmirror.sync.claim import BlobClaims

JOB = "127.0.0.1:5000/mirror/"
UNITS = [JOB + "python", JOB + "node", JOB + "alpine"]
KEY = "docker.io anonymous"


def test_workers_join_one_run_and_claim_each_unit_once(where: str) -> None:
    with State.open(where) as st:
        run, started = st.join_run(JOB, UNITS, "a", commit="c1", lease=10, now=100)
        again, joined_started = st.join_run(JOB, UNITS, "b", commit="c1", lease=10, now=100)
        assert started and not joined_started and again == run
        assert st.claim_unit(run, "a", lease=10, now=100) == UNITS[0]  # in priority order
        assert st.claim_unit(run, "b", lease=10, now=100) == UNITS[1]
        assert st.claim_unit(run, "a", lease=10, now=101) == UNITS[2]
        assert st.claim_unit(run, "b", lease=10, now=102) is None
        # a renews its leases, b does not: b's unit is claimable once its lease ran out, a's are not
        assert st.renew_leases(run, "a", lease=10, now=108) == sorted([UNITS[0], UNITS[2]])
        assert st.claim_unit(run, "a", lease=10, now=111) == UNITS[1]
        assert not st.finish_unit(run, UNITS[1], "b", summary={})  # b lost it
        for unit in UNITS:
            assert st.finish_unit(run, unit, "a", blockers=["x"] if unit == UNITS[0] else [], summary={"n": 1})
        assert st.units_left(run) == 0
        work = st.work_in_progress(now=115)
        assert [(w["run"], w["status"], w["units"]) for w in work] == [(run, "open", {"done": 3})]
        assert [(x["worker"], x["status"], x["lease_left"]) for x in work[0]["workers"]] == [
            ("a", "working", 6.0),
            ("b", "working", -3.0),  # its lease ran out
        ]
        assert ("work" in st.overview()) is st.cooperative  # `hubmirror status` shows it for PostgreSQL
        assert st.close_run(run, "b", {"exit_code": 0}, now=111)
        assert not st.close_run(run, "a", {"exit_code": 0}, now=111)  # closed once
        joined, started = st.join_run(JOB, UNITS, "c", commit="c1", lease=10, now=111)
        assert (joined, started) == (run, False)  # b is closing it: c joins, finds nothing to do
        assert st.claim_unit(run, "c", lease=10, now=111) is None
        assert not st.close_run(run, "c", {"exit_code": 0}, now=111)
        summaries, blockers = st.run_work(run)
        assert summaries == {"a": {"exit_code": 0}, "b": {"exit_code": 0}, "c": {"exit_code": 0}}
        assert blockers == ["x"]
        st.end_run(run)
        assert [(u[1], u[2]) for u in st.work_units(run)] == [("done", "a")] * 3
        nxt, started = st.join_run(JOB, UNITS, "a", commit="c2", lease=10, now=200)
        assert started and nxt != run


def test_a_run_whose_workers_all_died_is_abandoned(where: str) -> None:
    with State.open(where) as st:
        run, _ = st.join_run(JOB, UNITS, "a", commit=None, lease=10, now=100)
        assert st.claim_unit(run, "a", lease=10, now=100) == UNITS[0]
        late, started = st.join_run(JOB, UNITS, "b", commit=None, lease=10, now=105)
        assert late == run and not started  # a is alive: b joins
        new, started = st.join_run(JOB, UNITS, "c", commit=None, lease=10, now=200)  # a and b are long gone
        assert started and new != run
        assert [r.status for r in st.runs()] == ["running", "interrupted"]


def test_a_failing_worker_releases_its_units(where: str) -> None:
    with State.open(where) as st:
        run, _ = st.join_run(JOB, UNITS, "a", commit=None, lease=10, now=100)
        assert st.claim_unit(run, "a", lease=10, now=100) == UNITS[0]
        st.release_units(run, "a")
        assert st.claim_unit(run, "b", lease=10, now=101) == UNITS[0]


BLOB = "sha256:" + "b" * 64
OTHER = "sha256:" + "c" * 64


def test_a_blob_is_claimed_once_and_a_dead_workers_claim_runs_out_with_its_lease(where: str) -> None:
    with State.open(where) as st:
        run, _ = st.join_run(JOB, UNITS, "a", commit=None, lease=10, now=100)
        st.join_run(JOB, UNITS, "b", commit=None, lease=10, now=100)
        assert st.blob_holders(run, BLOB) == [] and not st.blob_in_flight(run, BLOB, now=100)
        assert st.claim_blob(run, BLOB, "mirror/python", "a", lease=10, now=100)
        assert not st.claim_blob(run, BLOB, "mirror/node", "b", lease=10, now=101)  # a transfers it: b waits
        assert st.blob_in_flight(run, BLOB, now=101)
        st.renew_leases(run, "a", lease=10, now=108)  # the heartbeat renews it with a's other leases
        assert not st.claim_blob(run, BLOB, "mirror/node", "b", lease=10, now=115)
        assert st.blob_in_flight(run, BLOB, now=118)
        # a dies: once its lease ran out, nothing is in flight and b claims the blob
        assert not st.blob_in_flight(run, BLOB, now=118.5)
        assert st.claim_blob(run, BLOB, "mirror/node", "b", lease=10, now=119)
        assert not st.claim_blob(run, BLOB, "mirror/python", "a", lease=10, now=119)  # a is too late
        st.placed_blob(run, BLOB, "mirror/node", "b")
        assert st.blob_holders(run, BLOB) == ["mirror/node"] and not st.blob_in_flight(run, BLOB, now=120)
        # A repository holds it: no claim, mount it from there (unless the registry refuses the mount).
        assert not st.claim_blob(run, BLOB, "mirror/alpine", "a", lease=10, now=120)
        st.placed_blob(run, BLOB, "mirror/alpine", "a")
        assert st.blob_holders(run, BLOB) == ["mirror/alpine", "mirror/node"]
        # A failed transfer gives its claim back at once; so does a worker stopping on an error.
        assert st.claim_blob(run, OTHER, "mirror/python", "a", lease=10, now=121)
        st.release_blob(run, OTHER, "mirror/python", "a")
        assert st.claim_blob(run, OTHER, "mirror/node", "b", lease=10, now=121)
        st.release_units(run, "b")
        assert not st.blob_in_flight(run, OTHER, now=122)
        assert st.blob_holders(run, BLOB) == ["mirror/alpine", "mirror/node"]  # what b placed stays placed
        # The run's blobs go when it ends; those of a run abandoned go when the next run starts.
        st.end_run(run)
        assert st.blob_holders(run, BLOB) == []
        dead, _ = st.join_run(JOB, UNITS, "a", commit=None, lease=10, now=200)
        st.placed_blob(dead, BLOB, "mirror/python", "a")
        assert st.claim_blob(dead, OTHER, "mirror/python", "a", lease=10, now=200)
        new, started = st.join_run(JOB, UNITS, "c", commit=None, lease=10, now=300)  # a died
        assert started and new != dead
        assert st.blob_holders(dead, BLOB) == [] and not st.blob_in_flight(dead, OTHER, now=200)


def test_workers_claiming_the_same_blobs_together_claim_each_once(where: str) -> None:
    """Two workers (two connections) claim the same 40 blobs at the same time: each blob goes to one."""
    digests = [f"sha256:{i:064x}" for i in range(40)]
    with State.open(where) as st:
        run, _ = st.join_run(JOB, UNITS, "a", commit=None, lease=30, now=time.time())
    got: dict[str, list[str]] = {"a": [], "b": []}
    start = threading.Barrier(2)

    def worker(name: str) -> None:
        with State.open(where) as st:
            start.wait(timeout=60)
            for d in digests:
                if st.claim_blob(run, d, f"mirror/{name}", name, lease=30, now=time.time()):
                    got[name].append(d)

    threads = [threading.Thread(target=worker, args=(n,)) for n in got]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(got["a"] + got["b"]) == digests  # each blob claimed by exactly one worker


async def test_blob_claims_let_one_lane_transfer_and_the_others_wait(tmp_path: Path) -> None:
    """`BlobClaims`, the ledger of one worker: its lanes wait for each other in the process; a lane of
    another worker waits on the state until the claim is over, then sees the repository to mount from."""
    with State.open(tmp_path / "state.db") as st:
        run, _ = st.join_run(JOB, UNITS, "a", commit=None, lease=10, now=time.time())
        a = BlobClaims(st, run, "a", lease=10, poll=0.05)
        b = BlobClaims(st, run, "b", lease=10, poll=0.05)
        assert await a.claim(BLOB, "mirror/python")
        assert not await a.claim(BLOB, "mirror/node")  # another lane of a has it in flight
        assert not await b.claim(BLOB, "mirror/alpine")  # another worker has it in flight
        lane = asyncio.create_task(a.wait(BLOB))
        other = asyncio.create_task(b.wait(BLOB))
        await asyncio.sleep(0.2)
        assert not lane.done() and not other.done()
        await a.placed(BLOB, "mirror/python")
        await asyncio.wait_for(asyncio.gather(lane, other), 30)
        assert await b.holders(BLOB) == {"mirror/python"}
        # A failed transfer: the claim goes, the next one claims it.
        assert await b.claim(OTHER, "mirror/alpine")
        waiting = asyncio.create_task(a.wait(OTHER))
        await b.release(OTHER, "mirror/alpine")
        await asyncio.wait_for(waiting, 30)
        assert await a.claim(OTHER, "mirror/node")


def test_the_shared_quota_is_debited_settled_and_rebased(where: str) -> None:
    with State.open(where) as st:
        run, _ = st.join_run(JOB, UNITS, "a", commit=None, lease=100, now=0)

        def take(want: int, *, remaining: int | None, observed_at: float, now: float) -> int:
            return st.take_pulls(
                KEY, want, worker="a", run_id=run, remaining=remaining, observed_at=observed_at, reserve=5, now=now
            )

        def settle(taken: int, unused: int, *, now: float) -> None:
            st.settle_pulls(KEY, taken, unused, worker="a", now=now)

        assert take(5, remaining=None, observed_at=0, now=1) == 5  # no quota: not counted
        assert st.pull_quota(KEY) is None
        assert take(8, remaining=25, observed_at=1, now=2) == 8  # 20 available
        assert take(8, remaining=25, observed_at=1, now=2) == 8
        assert take(8, remaining=25, observed_at=1, now=2) == 4  # what is left
        assert take(1, remaining=25, observed_at=1, now=2) == 0
        assert st.pull_quota(KEY) == (0, 20)
        settle(8, 3, now=3)  # 5 spent, 3 back
        assert st.pull_quota(KEY) == (3, 12)
        # The source says 10 left (5 beyond the reserve): no fewer than the 3 the workers count, nothing changes.
        assert take(1, remaining=10, observed_at=4, now=4) == 1
        assert st.pull_quota(KEY) == (2, 13)
        # It says 6: someone else pulled. 13 are out with the workers (maybe unspent): none can be taken.
        assert take(1, remaining=6, observed_at=4, now=4) == 0
        settle(8, 0, now=5)
        settle(5, 5, now=5)
        assert st.pull_quota(KEY) == (5, 0)
        # An older observation never raises it; a newer one with nothing out does (a new window).
        assert take(50, remaining=100, observed_at=4.5, now=6) == 5
        settle(5, 5, now=7)
        assert take(50, remaining=100, observed_at=8, now=8) == 50
        assert st.pull_quota(KEY) == (45, 50)
        # A new run (here of the same job, its run over) keeps what the quota holds and the pulls out.
        st.end_run(run)
        nxt, started = st.join_run(JOB, UNITS, "b", commit=None, lease=100, now=9)
        assert started and nxt != run
        assert st.pull_quota(KEY) == (45, 50)


OTHER_JOB = "other.example/team/"


def test_a_run_of_another_job_on_the_same_quota_keeps_the_pulls_out(where: str) -> None:
    """Two jobs (two configs) read the same source account: one quota. Job B starting a run while job A's
    worker holds pulls neither forgets them nor re-bases over them."""
    with State.open(where) as st:
        run_a, _ = st.join_run(JOB, UNITS, "a", commit=None, lease=10, now=100)
        assert st.take_pulls(KEY, 15, worker="a", run_id=run_a, remaining=25, observed_at=100, reserve=5, now=100) == 15
        run_b, started = st.join_run(OTHER_JOB, [OTHER_JOB + "python"], "b", commit=None, lease=10, now=101)
        assert started and run_b != run_a
        assert st.pull_quota(KEY) == (5, 15)  # a's 15 are still out
        # b reads the quota (a has not spent yet, the source still says 25): b gets the 5 left, not 20.
        assert st.take_pulls(KEY, 20, worker="b", run_id=run_b, remaining=25, observed_at=102, reserve=5, now=102) == 5
        # A new window shows (100 left) while a holds pulls: no re-base, they may be spent on the old count.
        st.renew_leases(run_a, "a", lease=10, now=105)
        assert st.take_pulls(KEY, 1, worker="b", run_id=run_b, remaining=100, observed_at=106, reserve=5, now=106) == 0
        # a spends 10 of its 15 and gives 5 back; b spends its 5: nothing out, and a header newer than that
        # re-bases the quota.
        st.settle_pulls(KEY, 15, 5, worker="a", now=107)
        assert st.pull_quota(KEY) == (5, 5)
        st.settle_pulls(KEY, 5, 0, worker="b", now=108)
        assert st.pull_quota(KEY) == (5, 0)
        assert st.take_pulls(KEY, 50, worker="b", run_id=run_b, remaining=80, observed_at=109, reserve=5, now=109) == 50
        assert st.pull_quota(KEY) == (25, 50)


def test_a_dead_workers_pulls_count_as_spent_once_its_lease_ran_out(where: str) -> None:
    """A worker killed holding pulls never settles them: they stop holding the quota back once a header
    received after its lease ran out counts them, instead of staying out for ever."""
    with State.open(where) as st:
        run, _ = st.join_run(JOB, UNITS, "a", commit=None, lease=10, now=100)
        st.join_run(JOB, UNITS, "b", commit=None, lease=10, now=100)

        def take(worker: str, want: int, *, remaining: int, observed_at: float, now: float) -> int:
            return st.take_pulls(
                KEY, want, worker=worker, run_id=run, remaining=remaining, observed_at=observed_at, reserve=5, now=now
            )

        assert take("a", 10, remaining=25, observed_at=100, now=100) == 10
        assert take("b", 10, remaining=25, observed_at=100, now=100) == 10
        # b is SIGKILLed (no heartbeat, nothing settled); a lives on and spends its 10.
        st.renew_leases(run, "a", lease=10, now=106)
        st.settle_pulls(KEY, 10, 0, worker="a", now=107)
        assert st.pull_quota(KEY) == (0, 10)
        # The window refills while b's lease (until 110) is alive: b may be pulling still, no re-base.
        assert take("a", 50, remaining=100, observed_at=108, now=108) == 0
        # b's lease ran out, but that header was received before: it may not count b's last pulls.
        st.renew_leases(run, "a", lease=10, now=112)
        assert take("a", 50, remaining=100, observed_at=108, now=112) == 0
        # A header received after b's lease ran out counts every pull b sent: the quota re-bases, b's are spent.
        assert take("a", 50, remaining=100, observed_at=113, now=113) == 50
        assert st.pull_quota(KEY) == (45, 50)
        # b was only stalled, not dead: what it gives back now is not credited (counted spent), nor does it
        # touch a's pulls.
        st.settle_pulls(KEY, 10, 10, worker="b", now=114)
        assert st.pull_quota(KEY) == (45, 50)


class FakePool:
    """A shared quota of *left* pulls, as `hubmirror.sync.claim.SharedQuota` keeps it in the state."""

    def __init__(self, left: int) -> None:
        self.left, self.out = left, 0

    async def take(self, n: int, observed: RateLimit | None) -> int:
        got = min(n, self.left)
        self.left -= got
        self.out += got
        return got

    async def settle(self, spent: int, unused: int) -> None:
        self.left += unused
        self.out -= spent + unused


async def test_a_budget_with_a_pool_grants_only_pulls_taken_from_it() -> None:
    budget = PullBudget(lambda: RateLimit(100, 90), reserve=5)
    pool = FakePool(12)
    budget.pool = pool
    assert budget.grant(5) is None  # nothing taken yet: nothing granted
    await budget.top_up(10)  # what a repository's copies need
    assert pool.left == 2 and pool.out == 10 and budget.left() == 10
    assert budget.grant(8) == 8 and budget.left() == 2
    async with budget.spending(8):
        for _ in range(6):
            await budget.acquire()  # 6 of the 8
        await budget.release()  # another repository is done meanwhile: the 6 spent are settled, the 2 held go back
        assert pool.left == 4 and pool.out == 2  # the 2 set aside for the copy in flight stay out
    assert budget.left() == 2  # they came back unused
    await budget.acquire(3)  # GETs outside a work item draw on what is held, then on the pool
    assert pool.left == 3 and budget.left() == 0
    await budget.acquire(2)
    await budget.release()
    assert pool.left == 1 and pool.out == 0  # every pull taken is settled: spent or given back
    await budget.acquire()
    with pytest.raises(BudgetExhausted, match="workers sharing it"):
        await budget.acquire()
    await budget.release()
    assert budget.granted == 12 and pool.left == 0 and pool.out == 0  # every pull of the pool, not one more
