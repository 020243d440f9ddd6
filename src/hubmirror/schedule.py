"""Daemon mode: run a job at every time of a cron schedule (croniter), until interrupted."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

from croniter import croniter

from ._errors import ConfigError


def next_run(schedule: str, after: datetime) -> datetime:
    """The first time of *schedule* strictly after *after*; `ConfigError` for a bad expression."""
    if not croniter.is_valid(schedule):
        raise ConfigError(f"schedule {schedule!r} is not a valid cron expression (e.g. '17 */6 * * *')")
    nxt: datetime = croniter(schedule, after).get_next(datetime)
    return nxt


def run_on_schedule(
    schedule: str,
    job: Callable[[], int],
    *,
    on_wait: Callable[[int, datetime], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    now: Callable[[], datetime] = datetime.now,
    runs: int | None = None,
) -> int:
    """Run *job* now, then at each time of *schedule*; returns 0 when interrupted (Ctrl-C, SIGTERM → KeyboardInterrupt)
    or after *runs* runs (for tests). *on_wait* is told each exit code and the next run's time."""
    done = 0
    try:
        while True:
            code = job()
            done += 1
            if runs is not None and done >= runs:
                return 0
            nxt = next_run(schedule, now())
            if on_wait is not None:
                on_wait(code, nxt)
            sleep(max(0.0, (nxt - now()).total_seconds()))
    except KeyboardInterrupt:
        return 0
