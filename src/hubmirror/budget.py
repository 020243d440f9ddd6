"""The pull budget: how many source manifest GETs (Docker Hub "pulls") a run may spend.

The allowance is read from the source's ``ratelimit-remaining`` header (reported on free HEADs) minus a
reserve, and capped by ``--max-pulls``. When it is spent the run defers the rest, or with ``wait`` sleeps
until the quota window refills. A quota 429 that comes anyway stops every further GET at once.

A work item sets aside its estimated pulls before it starts (`PullBudget.for_item`), so the budget never
runs out half-way through an image: what one run fetched is never fetched again by the next.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass

from ._errors import BudgetExhausted
from .registry.ratelimit import RateLimit


@dataclass
class _Prepaid:
    left: int


#: The pulls set aside for the work item running in this task (and the tasks it starts).
_prepaid: ContextVar[_Prepaid | None] = ContextVar("hubmirror_prepaid_pulls", default=None)


def allowance(remaining: int | None, *, reserve: int, max_pulls: int | None) -> int | None:
    """Pulls a run may spend now: the quota left minus the reserve, capped by ``--max-pulls``
    (None: unlimited — the source reports no quota and no cap is set)."""
    limits = [remaining - reserve] if remaining is not None else []
    if max_pulls is not None:
        limits.append(max_pulls)
    return max(0, min(limits)) if limits else None


class PullBudget:
    """Grants source manifest GETs until the budget is spent: the `hubmirror.store.PullGate` of the
    Docker Hub source store, whose client asks it before every manifest GET it sends.

    *ratelimit* returns the quota as last reported by the source (None: not limited). *probe* re-reads it
    with a free HEAD; it is used while waiting for the window to refill.
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
            return
        async with self._lock:
            while True:
                if self.stopped:
                    raise BudgetExhausted(self.stopped)
                if self.max_pulls is not None and self.granted + n > self.max_pulls:
                    self.stopped = f"--max-pulls {self.max_pulls} reached"
                    raise BudgetExhausted(self.stopped)
                quota = self._quota_left()
                if quota is None or quota >= n:
                    self.granted += n
                    return
                if not (self.wait and self.probe is not None) or not await self._wait_refill(n):
                    rl = self._ratelimit()
                    left = rl.remaining if rl else 0
                    self.stopped = f"pull quota: {left} left, keeping a reserve of {self.reserve}"
                    raise BudgetExhausted(self.stopped)

    @contextlib.asynccontextmanager
    async def for_item(self, n: int) -> AsyncIterator[None]:
        """Set aside *n* pulls (a work item's estimate) before the item starts; raise `BudgetExhausted` if
        they are not available (after waiting, with ``wait``). GETs inside the block draw on them first;
        what is left unused is given back at the end. An estimate larger than a whole quota window can
        hold is not set aside (the item then takes its pulls one by one)."""
        rl = self._ratelimit()
        if rl is not None and n > rl.limit - self.reserve:
            n = 0
        if n <= 0:
            yield
            return
        await self.acquire(n)
        prepaid = _Prepaid(n)
        token = _prepaid.set(prepaid)
        try:
            yield
        finally:
            _prepaid.reset(token)
            async with self._lock:
                self.granted -= prepaid.left

    def stop(self, reason: str) -> None:
        """Grant nothing more, not even pulls set aside for items in flight (a quota 429 came anyway)."""
        self.stopped = self.stopped or reason
        self._halted = True

    async def _wait_refill(self, n: int) -> bool:
        """Poll the quota with free HEADs until *n* pulls are available; False once `max_wait` is slept."""
        assert self.probe is not None
        waited = 0.0
        while waited < self.max_wait:
            delay = min(self._poll, self.max_wait - waited)
            await self._sleep(delay)
            waited += delay
            self.waited += delay
            await self.probe()
            rl = self._ratelimit()
            if rl is None or rl.remaining - self.reserve >= n:
                # A new window: recount the allowance from this observation.
                self._base = None if rl is None else rl.remaining - self.reserve
                self._base_granted = self.granted
                return True
        return False
