"""Notifications (config ``notify:``): a POST of JSON to each receiver for the events it asked for.

Events: ``failure`` (a run failed, or could not start), ``recovery`` (the first good run after a failed one),
``slo_breach`` (work pending longer than ``freshness_slo``; sent once per breach, again after it cleared),
``deferred`` (a run left work for the next one) and ``success``. Each POST carries ``event``, a human ``text``
(a Slack or Mattermost incoming webhook shows it as it is) and structured fields: the run, its exit code,
counts, the first failures, the lagging repositories.

A receiver never fails or slows a run: the notification is sent after the run, each receiver with a few
retries and backoff within a short deadline, and a dead one is logged, never raised. A receiver's URL is
logged as its scheme and host only: webhook URLs carry their secret in the path or the query.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from .report import Outcome, SyncReport

log = logging.getLogger(__name__)

Event = Literal["failure", "recovery", "slo_breach", "deferred", "success"]
EVENTS: Final[tuple[Event, ...]] = ("failure", "recovery", "slo_breach", "deferred", "success")
DEFAULT_EVENTS: Final[tuple[Event, ...]] = ("failure", "recovery", "slo_breach")
#: Attempts per receiver, and the whole time one notification may take (all receivers at once).
ATTEMPTS: Final = 3
DEADLINE: Final = 15.0
#: Failures listed in a notification (the count is always exact).
MAX_LISTED: Final = 5
#: State keys: the outcome of the last run notified about, and whether an SLO breach was announced.
LAST_OUTCOME_KEY: Final = "notify:last_outcome"
SLO_BREACHED_KEY: Final = "notify:slo_breached"


@dataclass(frozen=True)
class Receiver:
    """One ``notify:`` entry: where to POST, and for which events."""

    url: str = field(repr=False)
    events: tuple[Event, ...] = DEFAULT_EVENTS

    @property
    def shown(self) -> str:
        """The URL as logs show it: scheme and host (the path and query may hold the webhook's secret)."""
        return shown_url(self.url)


def shown_url(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/…"


@dataclass
class Notice:
    """One event about one run: what is POSTed (`payload`)."""

    event: Event
    text: str
    fields: dict[str, Any]

    def payload(self) -> dict[str, Any]:
        return {"event": self.event, "text": self.text, **self.fields}


@dataclass
class Lagging:
    """A destination repository with work pending since *since* (deferred, not yet done)."""

    repository: str
    since: datetime
    tags: int


def events_for(
    *,
    report: SyncReport | None,
    error: str | None,
    exit_code: int,
    last_outcome: str | None,
    lagging: Sequence[Lagging],
    slo: float | None,
    slo_announced: bool,
    dest: str | None,
) -> list[Notice]:
    """The notices a finished run calls for, given what was notified before (*last_outcome*: ``failed`` or
    ``ok``; *slo_announced*: a breach was announced and has not cleared)."""
    fields = _fields(report, error, exit_code, dest)
    out: list[Notice] = []
    failed = exit_code == 1
    where = f" of {dest}" if dest else ""
    if failed:
        first = error or "; ".join(f"{f['source']}: {f['reason']}" for f in fields["failures"][:2]) or "see the report"
        out.append(Notice("failure", f"hubmirror: the sync{where} failed (exit {exit_code}): {first}", fields))
    else:
        if last_outcome == "failed":
            out.append(Notice("recovery", f"hubmirror: the sync{where} is good again (exit {exit_code})", fields))
        deferred = fields["counts"].get(Outcome.DEFERRED.value, 0)
        if deferred:
            out.append(Notice("deferred", f"hubmirror: {deferred} items{where} deferred to the next run", fields))
        elif exit_code == 0:
            out.append(Notice("success", f"hubmirror: the sync{where} is complete", fields))
    if slo is not None:
        now = datetime.now(UTC)
        late = [lag for lag in lagging if (now - lag.since).total_seconds() > slo]
        if late and not slo_announced:
            oldest = min(lag.since for lag in late)
            hours = (now - oldest).total_seconds() / 3600
            text = (
                f"hubmirror: {len(late)} repositories{where} behind for longer than the freshness objective "
                f"({_duration(slo)}); the oldest change has waited {hours:.1f} h"
            )
            lag_fields = [
                {"repository": lag.repository, "since": lag.since.isoformat(), "tags": lag.tags} for lag in late
            ]
            out.append(Notice("slo_breach", text, {**fields, "lagging": lag_fields}))
    return out


def _fields(report: SyncReport | None, error: str | None, exit_code: int, dest: str | None) -> dict[str, Any]:
    failures: list[dict[str, Any]] = []
    counts: dict[str, int] = {}
    run_id = None
    if report is not None:
        counts = report.counts()
        run_id = report.run_id
        failures = [
            {"source": i.source, "dest": i.dest, "tags": i.tags, "reason": i.reason}
            for i in report.by_outcome(Outcome.FAILED)
        ]
    return {
        "run": run_id,
        "exit_code": exit_code,
        "dest": dest,
        "error": error,
        "counts": counts,
        "failed": len(failures),
        "failures": failures[:MAX_LISTED],
        "lagging": [],
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


async def send(receivers: Sequence[Receiver], notices: Sequence[Notice], *, deadline: float = DEADLINE) -> int:
    """POST each notice to each receiver that asked for its event; returns how many were delivered. Never
    raises; the whole takes at most *deadline* seconds."""
    jobs = [(r, n) for n in notices for r in receivers if n.event in r.events]
    if not jobs:
        return 0
    import aiohttp

    delivered = 0
    timeout = aiohttp.ClientTimeout(total=min(10.0, deadline), sock_connect=5)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def one(receiver: Receiver, notice: Notice) -> None:
            nonlocal delivered
            last = ""
            for attempt in range(1, ATTEMPTS + 1):
                try:
                    async with session.post(receiver.url, json=notice.payload()) as resp:
                        if resp.status < 300:
                            delivered += 1
                            return
                        last = f"HTTP {resp.status}"
                        if resp.status < 500 and resp.status != 429:
                            break
                except (aiohttp.ClientError, TimeoutError) as e:
                    last = type(e).__name__
                if attempt < ATTEMPTS:
                    await asyncio.sleep(random.uniform(0.5, 1.0) * 2 ** (attempt - 1))
            log.warning("notification %s to %s not delivered: %s", notice.event, receiver.shown, last)

        try:
            async with asyncio.timeout(deadline):
                await asyncio.gather(*(one(r, n) for r, n in jobs))
        except TimeoutError:
            log.warning("notifications: not all delivered within %.0f s", deadline)
    return delivered


def _duration(seconds: float) -> str:
    if seconds % 3600 == 0:
        return f"{seconds / 3600:.0f}h"
    if seconds % 60 == 0:
        return f"{seconds / 60:.0f}m"
    return f"{seconds:.0f}s"


__all__ = ["DEFAULT_EVENTS", "EVENTS", "Event", "Lagging", "Notice", "Receiver", "events_for", "send", "shown_url"]
