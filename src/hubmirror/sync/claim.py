"""Claims and leases: how several ``hubmirror sync`` workers on one PostgreSQL state divide a run.

The unit of work is one destination repository (all its tag groups). The first worker of a job starts the
run and lists its units; the others join it (`State.join_run`). Each worker claims one unit at a time
(`State.claim_unit`: ``SELECT … FOR UPDATE SKIP LOCKED``) under a lease that a heartbeat renews every third
of its length; a worker that dies stops renewing, and once its lease has run out (`SyncConfig.lease`,
30 s by default) another worker claims its unit again. The workers share one pull quota (`SharedQuota`,
a row of the state) that every pull is taken from before it is granted, and the blobs of the run
(`BlobClaims`): a blob another worker placed is mounted from its repository, one another worker is
transferring is waited for, so that a blob shared by several repositories is downloaded once.

The state's server may restart mid-run: each call is made again on a new connection (`State.run`), those
that stamp a lease with the time of the call reading the clock again, so that a lease renewed after the
server came back runs from then. A restart shorter than the lease loses no claim.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from .._errors import StateError, StateUnavailable
from ..config import SyncConfig
from ..registry.ratelimit import RateLimit
from ..state import State

log = logging.getLogger(__name__)


def worker_name() -> str:
    """This process as the state names it: ``pid N on HOST #xxxxxx``."""
    return f"pid {os.getpid()} on {socket.gethostname()} #{uuid.uuid4().hex[:6]}"


def quota_key(cfg: SyncConfig) -> str:
    """The shared pull quota's key: ``ratelimit.quota_key`` if set (anonymous limits are per egress IP:
    give each egress its own), else the source registry and the account the source is read with."""
    if cfg.ratelimit.quota_key:
        return cfg.ratelimit.quota_key
    creds = cfg.resolve_credentials(cfg.source)
    user = getattr(creds, "username", None) if creds is not None else None
    return f"{cfg.source} {user or 'anonymous'}"


class Claims:
    """One worker's part in a run: joins it, claims units with a lease, keeps the leases alive, and tells
    when the run is over and whether this worker closes it."""

    def __init__(self, state: State, *, lease: float, worker: str | None = None) -> None:
        self.state = state
        self.lease = lease
        self.worker = worker or worker_name()
        self.run_id: int | None = None
        self.started = False  # this worker started the run
        self._wake = asyncio.Event()  # set when one of this worker's units is done

    async def join(self, job: str, units: list[str], *, commit: str | None) -> int:
        self.run_id, self.started = await self.state.run(
            lambda: self.state.join_run(job, units, self.worker, commit=commit, lease=self.lease, now=time.time())
        )
        return self._run

    @property
    def _run(self) -> int:
        assert self.run_id is not None, "join the run first"
        return self.run_id

    async def next(self) -> str | None:
        """The next unit this worker claims, waiting while others still hold some (one of them may die and
        leave its unit to be claimed again); None once every unit is done."""
        pause = 0.1  # the first looks come soon (the others' last units often end within a second), then 1 s
        while True:
            unit = await self.state.run(
                lambda: self.state.claim_unit(self._run, self.worker, lease=self.lease, now=time.time())
            )
            if unit is not None:
                return unit
            if not await self.state.run(self.state.units_left, self._run):
                return None
            # Others hold units: wait for one of ours to finish, or look again shortly (another worker
            # may finish, or die and leave its unit once its lease runs out).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), min(pause, self.lease / 4))
            pause = min(pause * 2, 1.0)

    async def done(self, unit: str, *, blockers: list[str], summary: dict[str, Any]) -> None:
        if not await self.state.run(
            self.state.finish_unit, self._run, unit, self.worker, blockers=blockers, summary=summary
        ):
            log.warning("%s: another worker took this repository over (this worker's lease ran out)", unit)
        self._wake.set()  # lanes waiting on this worker's units look again
        self._wake = asyncio.Event()

    async def close(self, summary: dict[str, Any], *, stopped: bool = False) -> bool:
        """This worker is finished (*stopped*: asked to stop); True if it closes the run (prune, the run
        record)."""
        return await self.state.run(
            lambda: self.state.close_run(self._run, self.worker, summary, now=time.time(), stopped=stopped)
        )

    async def release(self) -> None:
        """This worker stops before the run is done (an error): the others take its units at once."""
        if self.run_id is not None:
            with contextlib.suppress(StateError):
                await self.state.run(self.state.release_units, self.run_id, self.worker)

    @contextlib.asynccontextmanager
    async def heartbeat(self) -> AsyncIterator[None]:
        """Renew this worker's leases every third of their length while the block runs. A beat while the
        state's server is away waits for it (`State.run`) and renews from the time it is back; when it does
        not come back (`StateUnavailable`) this worker's leases are gone: the block is cancelled and raises
        that error (a worker whose lanes all wait on transfers stops too)."""
        owner = asyncio.current_task()
        lost: list[StateUnavailable] = []

        def renew() -> list[str]:
            return self.state.renew_leases(self._run, self.worker, lease=self.lease, now=time.time())

        async def beat() -> None:
            while True:
                await asyncio.sleep(self.lease / 3)
                try:
                    await self.state.run(renew)
                except StateUnavailable as e:
                    lost.append(e)
                    if owner is not None:
                        owner.cancel()
                    return
                except StateError as e:  # the next beat tries again; the lease outlives two missed beats
                    log.warning("heartbeat: %s", e)

        task = asyncio.create_task(beat())
        try:
            yield
        except asyncio.CancelledError:
            if not lost or owner is None:
                raise
            owner.uncancel()  # cancelled by the heartbeat, not by the caller: the error the heartbeat met
            raise lost[0] from None
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class BlobClaims:
    """The `hubmirror.copy.BlobLedger` of one worker of a run: the blobs the run's workers placed and are
    transferring, in the state (`State.claim_blob` …). A claim's lease is the run's, renewed by the worker's
    heartbeat (`State.renew_leases`): a worker that dies mid-transfer holds the others up one lease at most.
    The lanes of this worker (each with its own `Copier`) wait for each other here, without the state.

    The ledger only saves transfers: when the state cannot be read or written, a blob is transferred as if
    no other worker were there (with one warning). A state that went away for good (`StateUnavailable`)
    stops the run instead."""

    def __init__(self, state: State, run_id: int, worker: str, *, lease: float, poll: float = 0.5) -> None:
        self.state, self.run_id, self.worker, self.lease = state, run_id, worker, lease
        self.poll = min(poll, lease / 4)  # how often a waiter looks at another worker's claim
        self._mine: dict[str, tuple[str, asyncio.Event]] = {}  # digest → (repo, set when over) claimed here
        self._warned = False

    def _failed(self, e: StateError) -> None:
        if not self._warned:
            self._warned = True
            log.warning("blobs shared between workers: %s (transferring without them)", e)

    async def holders(self, digest: str) -> set[str]:
        try:
            return set(await self.state.run(self.state.blob_holders, self.run_id, digest))
        except StateUnavailable:
            raise
        except StateError as e:
            self._failed(e)
            return set()

    async def claim(self, digest: str, repo: str) -> bool:
        if digest in self._mine:  # another lane of this worker transfers it
            return False
        done = asyncio.Event()
        self._mine[digest] = (repo, done)
        try:
            got = await self.state.run(
                lambda: self.state.claim_blob(self.run_id, digest, repo, self.worker, lease=self.lease, now=time.time())
            )
        except StateUnavailable:
            self._over(digest, repo)
            raise
        except StateError as e:
            self._failed(e)
            got = True
        except BaseException:
            self._over(digest, repo)
            raise
        if not got:
            self._over(digest, repo)
        return got

    async def wait(self, digest: str) -> None:
        mine = self._mine.get(digest)
        if mine is not None:
            await mine[1].wait()
            return
        while True:
            try:
                busy = await self.state.run(lambda: self.state.blob_in_flight(self.run_id, digest, now=time.time()))
            except StateUnavailable:
                raise
            except StateError as e:
                self._failed(e)
                return
            if not busy:
                return
            await asyncio.sleep(self.poll)

    async def placed(self, digest: str, repo: str) -> None:
        await self._end(self.state.placed_blob, digest, repo)

    async def release(self, digest: str, repo: str) -> None:
        await self._end(self.state.release_blob, digest, repo)

    async def _end(self, write: Callable[[int, str, str, str], None], digest: str, repo: str) -> None:
        """The claim of *digest* for *repo* ends with *write* (placed, or given back) in the state."""
        try:
            await self.state.run(write, self.run_id, digest, repo, self.worker)
        except StateUnavailable:
            raise
        except StateError as e:
            self._failed(e)
        finally:
            self._over(digest, repo)

    def _over(self, digest: str, repo: str) -> None:
        """This lane's claim of *digest* for *repo*, if any, is over: the lanes waiting on it look again."""
        mine = self._mine.get(digest)
        if mine is not None and mine[0] == repo:
            del self._mine[digest]
            mine[1].set()


class SharedQuota:
    """The pull quota the workers share (`hubmirror.budget.PullPool`): a row of the state, debited in the
    transaction that takes pulls and re-based from ``ratelimit-remaining`` (`State.take_pulls`). The pulls
    *worker* (of run *run_id*, whose lease tells whether it is alive) holds are kept apart, whatever the job
    of the other workers on the same quota: if it dies, they count as spent."""

    def __init__(self, state: State, key: str, *, worker: str, run_id: int, reserve: int) -> None:
        self.state, self.key, self.worker, self.run_id, self.reserve = state, key, worker, run_id, reserve
        self.out = 0  # taken and not yet settled (spent or given back)

    async def take(self, n: int, observed: RateLimit | None) -> int:
        got = await self.state.run(
            self.state.take_pulls,
            self.key,
            n,
            worker=self.worker,
            run_id=self.run_id,
            remaining=observed.remaining if observed is not None else None,
            observed_at=observed.observed_at if observed is not None else 0.0,
            reserve=self.reserve,
            now=time.time(),
        )
        if observed is not None:  # pulls of an unlimited source are not counted
            self.out += got
        return got

    async def settle(self, spent: int, unused: int) -> None:
        # (pulls given while the source reported no quota were never counted: they are not settled)
        back = min(unused, self.out)
        done = min(spent + back, self.out)
        self.out -= done
        await self.state.run(self.state.settle_pulls, self.key, done, back, worker=self.worker, now=time.time())


__all__ = ["BlobClaims", "Claims", "SharedQuota", "quota_key", "worker_name"]
