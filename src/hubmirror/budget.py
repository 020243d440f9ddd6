"""The pull budget: how many source manifest GETs (Docker Hub "pulls") a run may spend.

The allowance is read from the source's ``ratelimit-remaining`` header (reported on free HEADs) minus a
reserve, and capped by ``--max-pulls``. When it is spent the run defers the rest, or with ``wait`` sleeps
until the quota window refills. A quota 429 that comes anyway stops every further GET at once.

Work items are taken in priority order, each setting aside its estimated pulls before it starts
(`PullBudget.grant`), so an image that fits is never left half-fetched. An item that does not fit what is
left is passed over and smaller ones further down are taken: a run never stops because of one item, and
spends its allowance whenever there is work. An image that needs more pulls than a whole window holds is
given what is left and copied across windows (its child manifests are pushed by digest as they arrive;
the next run goes on from there).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from ._errors import BudgetExhausted
from .registry.ratelimit import RateLimit


@dataclass
class _Prepaid:
    left: int


#: The pulls set aside for the work item running in this task (and the tasks it starts).
_prepaid: ContextVar[_Prepaid | None] = ContextVar("hubmirror_prepaid_pulls", default=None)


def grant_for(estimate: int, left: int | None, capacity: int | None) -> int | None:
    """Pulls to set aside for a work item of *estimate* pulls when *left* are available now and a run can
    never have more than *capacity* (a quota window less the reserve; None: unlimited).

    All of it when it fits. An item bigger than a whole window gets what is left (it is copied across
    windows: what it fetched stays done). None: it does not fit now and is passed over, so that a smaller
    item further down can be taken.
    """
    if estimate <= 0 or left is None:
        return 0
    if estimate <= left:
        return estimate
    if capacity is not None and estimate > capacity and left > 0:
        return left
    return None


def allot(estimates: Iterable[int], left: int | None, capacity: int | None) -> list[int | None]:
    """What a run with *left* pulls grants items of *estimates* in priority order (None: passed over):
    each takes `grant_for` from what the earlier ones left; then what is still left begins the first
    item passed over (its GETs are kept, it goes on in the next run), so the run spends all it has."""
    out: list[int | None] = []
    for estimate in estimates:
        granted = grant_for(estimate, left, capacity)
        if granted is not None and left is not None:
            left -= granted
        out.append(granted)
    if left:
        first = next((i for i, g in enumerate(out) if g is None), None)
        if first is not None:
            out[first] = left
    return out


def allowance(remaining: int | None, *, reserve: int, max_pulls: int | None) -> int | None:
    """Pulls a run may spend now: the quota left minus the reserve, capped by ``--max-pulls``
    (None: unlimited — the source reports no quota and no cap is set)."""
    limits = [remaining - reserve] if remaining is not None else []
    if max_pulls is not None:
        limits.append(max_pulls)
    return max(0, min(limits)) if limits else None


def capacity(limit: int | None, *, reserve: int, max_pulls: int | None) -> int | None:
    """The most pulls one run can have: a whole quota window of *limit* less the reserve, capped by
    ``--max-pulls`` (None: unlimited)."""
    limits = [limit - reserve] if limit is not None else []
    if max_pulls is not None:
        limits.append(max_pulls)
    return max(0, min(limits)) if limits else None


@dataclass(frozen=True)
class Forecast:
    """When *pulls* pulls will have been spent, at the quota the source announced."""

    pulls: int
    now: int  # spent by a run now
    per_window: int  # spent in each later window (a window's limit less the reserve, or --max-pulls)
    windows: int | None  # quota windows it takes, the current one included (None: never: nothing per window)
    done_by: datetime | None  # at the latest, when runs follow the windows (None: never, or window unknown)


def forecast(
    pulls: int,
    *,
    remaining: int,
    limit: int,
    window: int | None,
    reserve: int,
    max_pulls: int | None,
    now: datetime,
) -> Forecast:
    """How many quota windows *pulls* take when *remaining* of *limit* per *window* seconds are left now,
    keeping *reserve* (limit and window as the ``ratelimit-*`` headers announce them)."""
    first = allowance(remaining, reserve=reserve, max_pulls=max_pulls) or 0
    per = capacity(limit, reserve=reserve, max_pulls=max_pulls) or 0
    if pulls <= first:
        return Forecast(pulls, pulls, per, 1 if pulls else 0, now)
    if per <= 0:
        return Forecast(pulls, first, per, None, None)
    more = math.ceil((pulls - first) / per)
    done_by = now + timedelta(seconds=more * window) if window else None
    return Forecast(pulls, first, per, more + (1 if first else 0), done_by)


class PullPool(Protocol):
    """A pull quota shared with other processes (workers on one PostgreSQL state): pulls are taken from it
    before they are granted, and what was not spent is given back."""

    async def take(self, n: int, observed: RateLimit | None) -> int:
        """Take up to *n* pulls (*observed*: the quota as this process last saw it); how many it got."""
        ...

    async def settle(self, spent: int, unused: int) -> None:
        """*spent* pulls taken were spent (GETs sent) and *unused* go back; pulls taken and neither are
        still out (set aside for work in flight)."""
        ...


@dataclass(frozen=True)
class QuotaWait:
    """A wait for the pull quota (``wait``): what it waits for, and when it looks again or went on."""

    needed: int  # pulls the next work item needs
    remaining: int | None  # the quota left, as last reported
    reserve: int
    since: datetime  # when the wait began
    next_check: datetime | None  # when the quota is looked at again (a free HEAD)
    latest: datetime | None  # when a full window has passed (the quota is whole again by then)
    give_up: datetime | None  # max_wait: the run defers the rest then
    state: str = "waiting"  # waiting | resumed | gave_up
    waited: float = 0.0  # seconds, when it ended

    def text(self) -> str:
        left = f"{self.remaining} left" if self.remaining is not None else "none known"
        if self.state == "resumed":
            return f"pull quota: {left}; resuming after waiting {_seconds(self.waited)} for {self.needed} pulls"
        if self.state == "gave_up":
            return f"pull quota: still {left} after waiting {_seconds(self.waited)}; deferring the rest"
        text = (
            f"waiting for the pull quota: the next copy needs {self.needed} pulls, {left} (keeping {self.reserve});"
            f" looking again at {_clock(self.next_check)}"
        )
        resume = min((t for t in (self.latest, self.give_up) if t is not None), default=None)
        if self.latest is not None and resume == self.latest:
            text += f", resuming by {_clock(self.latest)} at the latest (a full quota window)"
        if self.give_up is not None and resume == self.give_up:
            text += f"; giving up at {_clock(self.give_up)} (ratelimit.max_wait)"
        return text

    def fields(self) -> dict[str, object]:
        iso = {
            k: (v.isoformat(timespec="seconds") if v is not None else None)
            for k, v in (
                ("since", self.since),
                ("next_check", self.next_check),
                ("resume_by", self.latest),
                ("give_up_at", self.give_up),
            )
        }
        return {
            "state": self.state,
            "needed": self.needed,
            "remaining": self.remaining,
            "reserve": self.reserve,
            "waited": round(self.waited, 1),
            **iso,
        }


def _clock(t: datetime | None) -> str:
    if t is None:
        return "–"
    fmt = "%H:%M:%S UTC" if t.date() == datetime.now(UTC).date() else "%Y-%m-%d %H:%M:%S UTC"
    return t.astimezone(UTC).strftime(fmt)


def _seconds(s: float) -> str:
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.0f} min"


class PullBudget:
    """Grants source manifest GETs until the budget is spent: the `hubmirror.store.PullGate` of the
    Docker Hub source store, whose client asks it before every manifest GET it sends.

    *ratelimit* returns the quota as last reported by the source (None: not limited). *probe* re-reads it
    with a free HEAD; it is used while waiting for the window to refill.

    With a *pool* (the quota shared by workers, `PullPool`) nothing is granted that was not taken from the
    pool first: `top_up` takes what a batch of work needs before it starts, `acquire` takes what a GET
    beyond it needs, and `release` gives back what is left.
    """

    def __init__(
        self,
        ratelimit: Callable[[], RateLimit | None],
        *,
        max_pulls: int | None = None,
        reserve: int = 5,
        wait: bool = False,
        max_wait: float = 21600.0,
        probe: Callable[[], Awaitable[None]] | None = None,
        poll_interval: float = 300.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._ratelimit = ratelimit
        self.max_pulls = max_pulls
        self.reserve = reserve
        self.wait = wait
        self.max_wait = max_wait
        self.probe = probe
        self._poll = poll_interval
        self._sleep = sleep
        self._lock = asyncio.Lock()
        self.granted = 0  # GETs granted in this run
        self._base: int | None = None  # quota-derived allowance, counted from `_base_granted`
        self._base_granted = 0
        self.stopped: str | None = None  # why no more GETs are granted
        self._halted = False  # a quota 429 came: not even pulls set aside may be spent
        self.waited = 0.0
        self.pool: PullPool | None = None
        self._held = 0  # pulls taken from the pool, not yet granted
        self._spent = 0  # pulls of the pool spent (GETs) since it was last settled with
        #: Told when a wait for the quota begins and ends (what it waits for, when it looks again).
        self.on_wait: Callable[[QuotaWait], None] | None = None

    def _quota_left(self) -> int | None:
        rl = self._ratelimit()
        if rl is None:
            return None
        if self._base is None:
            self._base = rl.remaining - self.reserve
            self._base_granted = self.granted
        # Our own GETs are counted exactly; the latest header also catches anyone else sharing the quota.
        own = self._base - (self.granted - self._base_granted)
        return min(own, rl.remaining - self.reserve)

    # -- the PullBudget protocol --------------------------------------------------------------------

    async def acquire(self, n: int = 1) -> None:
        """Take *n* pulls, waiting for the window to refill if allowed; else raise `BudgetExhausted`."""
        prepaid = _prepaid.get()
        if prepaid is not None and prepaid.left >= n:
            if self._halted and self.stopped:
                raise BudgetExhausted(self.stopped)
            prepaid.left -= n
            if self.pool is not None:
                self._spent += n
            return
        async with self._lock:
            while True:
                if self.stopped:
                    raise BudgetExhausted(self.stopped)
                if self.max_pulls is not None and self.granted + n > self.max_pulls:
                    self.stopped = f"--max-pulls {self.max_pulls} reached"
                    raise BudgetExhausted(self.stopped)
                quota = self._quota_left()
                if self.pool is not None and (quota is None or quota >= n) and self._held < n:
                    self._held += await self.pool.take(n - self._held, self._ratelimit())
                    if self._held < n:
                        self.stopped = "pull quota: the workers sharing it have spent it"
                        raise BudgetExhausted(self.stopped)
                if quota is None or quota >= n:
                    self.granted += n
                    if self.pool is not None:
                        self._held -= n
                        self._spent += n
                    return
                if not (self.wait and self.probe is not None) or not await self._wait_refill(n):
                    rl = self._ratelimit()
                    left = rl.remaining if rl else 0
                    self.stopped = f"pull quota: {left} left, keeping a reserve of {self.reserve}"
                    raise BudgetExhausted(self.stopped)

    def left(self) -> int | None:
        """Pulls this run may still set aside or spend now (None: unlimited)."""
        limits: list[int] = []
        if self.max_pulls is not None:
            limits.append(self.max_pulls - self.granted)
        quota = self._quota_left()
        if quota is not None:
            limits.append(quota)
        if self.pool is not None:
            limits.append(self._held)
        return max(0, min(limits)) if limits else None

    def capacity(self) -> int | None:
        """The most pulls a run can ever have (`capacity`); an item needing more is copied across windows."""
        rl = self._ratelimit()
        return capacity(rl.limit if rl is not None else None, reserve=self.reserve, max_pulls=self.max_pulls)

    def grant(self, estimate: int) -> int | None:
        """Set aside pulls for a work item estimated at *estimate* (see `grant_for`); None when it is
        passed over for now (a smaller item may still fit)."""
        if estimate <= 0:
            return 0
        if self.stopped:
            return None
        granted = grant_for(estimate, self.left(), self.capacity())
        if granted:
            self._take(granted)
        return granted

    def grant_rest(self) -> int:
        """Set aside every pull still left (to begin an item that does not fit whole); 0 if none."""
        if self.stopped:
            return 0
        left = self.left()
        if not left:
            return 0
        self._take(left)
        return left

    def _take(self, n: int) -> None:
        self.granted += n
        if self.pool is not None:
            self._held -= n

    async def top_up(self, need: int) -> None:
        """With a pool: take from it what work needing *need* pulls lacks (as much as it has)."""
        if self.pool is not None and not self.stopped and need > self._held:
            self._held += await self.pool.take(need - self._held, self._ratelimit())

    async def release(self) -> None:
        """With a pool: settle with it: the pulls spent so far, and those taken and not granted go back
        (pulls set aside for work still in flight stay out until a later release)."""
        if self.pool is not None:
            spent, unused, self._spent, self._held = self._spent, self._held, 0, 0
            await self.pool.settle(spent, unused)

    @contextlib.asynccontextmanager
    async def spending(self, granted: int) -> AsyncIterator[None]:
        """Run a work item on the *granted* pulls `grant` set aside: GETs inside the block draw on them
        first (then on what is left of the run's allowance); what is left unused is given back."""
        if granted <= 0:
            yield
            return
        prepaid = _Prepaid(granted)
        token = _prepaid.set(prepaid)
        try:
            yield
        finally:
            _prepaid.reset(token)
            self.granted -= prepaid.left
            if self.pool is not None:
                self._held += prepaid.left

    async def wait_until_fits(self, estimate: int) -> bool:
        """With ``wait``: poll the quota (free HEADs) until an item of *estimate* pulls can be granted;
        False without ``wait`` or once ``max_wait`` is slept."""
        if not self.wait or self.probe is None or self.stopped:
            return False
        capacity = self.capacity()
        need = 1 if capacity is not None and estimate > capacity else estimate
        async with self._lock:
            return await self._wait_refill(need)

    def stop(self, reason: str) -> None:
        """Grant nothing more, not even pulls set aside for items in flight (a quota 429 came anyway)."""
        self.stopped = self.stopped or reason
        self._halted = True

    async def _wait_refill(self, n: int) -> bool:
        """Poll the quota with free HEADs until *n* pulls are available; False once `max_wait` is slept.
        The poll interval is at most the quota window, when the source names it."""
        assert self.probe is not None
        waited = 0.0
        rl = self._ratelimit()
        window = rl.window if rl is not None else None
        poll = min(self._poll, float(window)) if window else self._poll
        since = datetime.now(UTC)
        give_up = since + timedelta(seconds=self.max_wait) if math.isfinite(self.max_wait) else None
        latest = since + timedelta(seconds=window) if window else None

        def tell(state: str, next_check: datetime | None = None) -> None:
            if self.on_wait is not None:
                rl = self._ratelimit()
                remaining = rl.remaining if rl is not None else None
                self.on_wait(QuotaWait(n, remaining, self.reserve, since, next_check, latest, give_up, state, waited))

        tell("waiting", since + timedelta(seconds=min(poll, self.max_wait)))
        while waited < self.max_wait:
            delay = min(poll, self.max_wait - waited)
            await self._sleep(delay)
            waited += delay
            self.waited += delay
            await self.probe()
            rl = self._ratelimit()
            if rl is None or rl.remaining - self.reserve >= n:
                # A new window: recount the allowance from this observation.
                self._base = None if rl is None else rl.remaining - self.reserve
                self._base_granted = self.granted
                if self.pool is not None and self._held < n:  # the workers' shared quota refills too
                    self._held += await self.pool.take(n - self._held, rl)
                    if self._held < n:
                        continue
                tell("resumed")
                return True
        tell("gave_up")
        return False
