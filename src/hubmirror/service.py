"""The service layer shared by ``hubmirror sync``, ``sync --daemon`` and ``hubmirror serve``.

`SyncService` runs one sync (`run` in a running event loop, `run_once` with its own ``asyncio.run``),
writes the report file and the Prometheus metrics after it, and turns a `HubmirrorError` that stops a
run before it starts (an unreachable library, a bad destination) into a `RunResult` with one message.
`run_scheduled` is the daemon loop. Rendering is left to the callers (the CLI draws with rich, the
server keeps the results for its status page). Exit codes are those of `hubmirror.report`: 0 done,
1 failed, 75 (``EX_TEMPFAIL``) work deferred by the pull budget; 2 stays typer's usage error.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ._errors import ConfigError, HubmirrorError
from .config import SyncConfig
from .plan import Plan
from .report import EXIT_DONE, EXIT_FAILED, SyncReport
from .sync import RunControl, SyncEvents, run_sync

if TYPE_CHECKING:
    from .metrics import SyncMetrics


@dataclass
class RunResult:
    """What one run gave: the plan and report, or the error that stopped it before it could start."""

    plan: Plan | None = None
    report: SyncReport | None = None
    error: str | None = None
    dry_run: bool = False
    started: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def exit_code(self) -> int:
        """The shell's exit code: the report's (0 done, 1 failed, 75 deferred by the pull budget; a dry run
        that found no failure is 0, as it defers nothing); 1 after an error that stopped the run."""
        if self.report is None:
            return EXIT_FAILED
        code = self.report.exit_code
        return EXIT_DONE if self.dry_run and code != EXIT_FAILED else code


class SyncService:
    """Runs syncs for a CLI invocation, a daemon or a server; keeps one `SyncMetrics` across its runs."""

    def __init__(self, *, cache_dir: Path | None = None, metrics: SyncMetrics | None = None) -> None:
        self.cache_dir = cache_dir
        self._metrics = metrics

    @property
    def metrics(self) -> SyncMetrics:
        """The metrics, created on first use: a one-shot run without a metrics file never loads
        prometheus_client (start-up time of a no-op ``hubmirror sync``)."""
        if self._metrics is None:
            from .metrics import SyncMetrics

            self._metrics = SyncMetrics()
        return self._metrics

    async def run(
        self, cfg: SyncConfig, *, events: SyncEvents | None = None, control: RunControl | None = None
    ) -> RunResult:
        """One sync in the running event loop; the report file and metrics are written after it."""
        result = RunResult(dry_run=cfg.dry_run)
        try:
            cfg.check_outputs()  # before any work: a report that cannot be written must not stop a run midway
            result.plan, result.report = await run_sync(cfg, events=events, cache_dir=self.cache_dir, control=control)
            self._record(cfg, result.report)
        except HubmirrorError as e:
            result.error = str(e)
        whole = result.report.run if result.report is not None else None
        if cfg.notify and not cfg.dry_run and (whole is None or whole.get("closer")):  # workers: the closer's
            await notify_run(cfg, result)
        return result

    def run_once(
        self, cfg: SyncConfig, *, events: SyncEvents | None = None, control: RunControl | None = None
    ) -> RunResult:
        """`run` in its own event loop (one ``asyncio.run`` per run)."""
        return asyncio.run(self.run(cfg, events=events, control=control))

    def run_scheduled(
        self,
        cfg: SyncConfig,
        job: Callable[[], int],
        *,
        on_wait: Callable[[int, datetime], None] | None = None,
    ) -> int:
        """Call *job* (one run, returning its exit code) now and at each time of ``cfg.schedule``, serving
        ``/metrics`` on ``metrics_port`` meanwhile; returns 0 when interrupted."""
        if not cfg.schedule:
            raise ConfigError("--daemon needs a schedule in the config file (e.g. schedule: '17 */6 * * *')")
        if cfg.metrics_port is not None:
            self.metrics.serve(cfg.metrics_port, cfg.metrics_addr)
        from .schedule import run_on_schedule

        return run_on_schedule(cfg.schedule, job, on_wait=on_wait)

    def _record(self, cfg: SyncConfig, report: SyncReport) -> None:
        """Write the report file and the metrics; `HubmirrorError` naming the file if one cannot be written."""
        path = cfg.report
        try:
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(report.to_json())
            if not cfg.dry_run and (self._metrics is not None or cfg.metrics_file is not None):
                self.metrics.observe(report)
                if cfg.freshness_slo is not None:
                    self.metrics.set_freshness_slo(cfg.freshness_slo)
                if cfg.metrics_file is not None:
                    path = cfg.metrics_file
                    self.metrics.write(cfg.metrics_file)
        except OSError as e:
            raise HubmirrorError(f"cannot write {path}: {e.strerror or e} (the run itself finished)") from None


async def notify_run(cfg: SyncConfig, result: RunResult) -> None:
    """Send the notifications *result* calls for to ``cfg.notify`` (after the run: a receiver never fails or
    slows it), remembering in the state what was announced (the last outcome, an SLO breach)."""
    from .notify import LAST_OUTCOME_KEY, SLO_BREACHED_KEY, Lagging, Receiver, events_for, send
    from .state import State

    def read() -> tuple[str | None, str | None, list[Lagging]]:
        with State.open(cfg.state) as st:
            by_repo: dict[str, Lagging] = {}
            for d in st.deferred():
                lag = by_repo.get(d.dest_repo)
                if lag is None:
                    by_repo[d.dest_repo] = Lagging(d.dest_repo, d.since, len(d.tags))
                else:
                    lag.since, lag.tags = min(lag.since, d.since), lag.tags + len(d.tags)
            return st.get_meta(LAST_OUTCOME_KEY), st.get_meta(SLO_BREACHED_KEY), list(by_repo.values())

    try:
        last, announced, lagging = await asyncio.to_thread(read)
    except HubmirrorError:
        last, announced, lagging = None, None, []
    notices = events_for(
        report=result.report,
        error=result.error,
        exit_code=result.exit_code,
        last_outcome=last,
        lagging=lagging,
        slo=cfg.freshness_slo,
        slo_announced=announced is not None,
        dest=cfg.dest,
    )
    receivers = [Receiver(n.url, tuple(n.events)) for n in cfg.notify]
    await send(receivers, notices)
    now_late = any(n.event == "slo_breach" for n in notices) or (
        announced is not None
        and cfg.freshness_slo is not None
        and any((datetime.now(UTC) - lag.since).total_seconds() > cfg.freshness_slo for lag in lagging)
    )

    def write() -> None:
        with State.open(cfg.state) as st:
            st.set_meta(LAST_OUTCOME_KEY, "failed" if result.exit_code == 1 else "ok")
            st.set_meta(SLO_BREACHED_KEY, "1" if now_late else None)

    with contextlib.suppress(HubmirrorError):
        await asyncio.to_thread(write)


__all__ = ["RunResult", "SyncService", "notify_run"]
