"""The service layer shared by ``hubmirror sync``, ``sync --daemon`` and ``hubmirror serve``.

`SyncService` runs one sync (`run` in a running event loop, `run_once` with its own ``asyncio.run``),
writes the report file and the Prometheus metrics after it, and turns a `HubmirrorError` that stops a
run before it starts (an unreachable library, a bad destination) into a `RunResult` with one message.
`run_scheduled` is the daemon loop. Rendering is left to the callers (the CLI draws with rich, the
server keeps the results for its status page). Exit codes are those of `hubmirror.report`: 0 done,
1 failed, 75 (``EX_TEMPFAIL``) work deferred by the pull budget; 2 stays typer's usage error.

Interrupted (``run_once(..., on_signal=…)``, what ``hubmirror sync`` and ``sync --daemon`` use): the first
SIGINT or SIGTERM stops the run as SIGTERM stops ``serve``: the items in flight finish and every tag they
push is recorded, the copies not started are deferred (the next run takes them first), the report is
written, and the exit code is the report's (the deferred code, as work was left). During the plan nothing
was changed yet: the run stops at once. A second signal aborts: the run is cancelled (every tag pushed is
recorded, or its intent is, which the next run settles) and the exit code is `ABORTED` (130, as a shell
reports a command killed by SIGINT).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Final, Literal

from ._errors import ConfigError, HubmirrorError
from .config import SyncConfig
from .plan import Plan
from .report import EXIT_DONE, EXIT_FAILED, SyncReport
from .sync import RunControl, SyncEvents, run_sync

if TYPE_CHECKING:
    from .metrics import SyncMetrics


#: The exit code of a run aborted by a second signal (or stopped while planning): 128 + SIGINT, as shells say.
ABORTED: Final = 130
#: What the copies not started say when ``hubmirror sync`` is interrupted (the next run takes them first).
INTERRUPT_REASON: Final = "hubmirror sync was interrupted (SIGINT/SIGTERM); the next run takes this first"


@dataclass
class RunResult:
    """What one run gave: the plan and report, or the error that stopped it before it could start."""

    plan: Plan | None = None
    report: SyncReport | None = None
    error: str | None = None
    dry_run: bool = False
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    #: ``stopped``: a signal stopped the run after the items in flight (its report says what was deferred);
    #: ``aborted``: a second signal, or one while planning, cancelled it (no report).
    interrupted: Literal["stopped", "aborted"] | None = None

    @property
    def exit_code(self) -> int:
        """The shell's exit code: the report's (0 done, 1 failed, 75 deferred by the pull budget; a dry run
        that found no failure is 0, as it defers nothing); 1 after an error that stopped the run; `ABORTED`
        when interrupted before the run could end."""
        if self.interrupted == "aborted":
            return ABORTED
        if self.report is None:
            return EXIT_FAILED
        code = self.report.exit_code
        return EXIT_DONE if self.dry_run and code != EXIT_FAILED else code


class _Stopped(Exception):
    """The daemon loop ends: its run was interrupted (exit with *code*)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class SyncService:
    """Runs syncs for a CLI invocation, a daemon or a server; keeps one `SyncMetrics` across its runs."""

    def __init__(self, *, cache_dir: Path | None = None, metrics: SyncMetrics | None = None) -> None:
        self.cache_dir = cache_dir
        self._metrics = metrics
        #: How the latest `run_once` with *on_signal* ended when a signal came (None: none came).
        self.interrupted: Literal["stopped", "aborted"] | None = None

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
        self,
        cfg: SyncConfig,
        *,
        events: SyncEvents | None = None,
        control: RunControl | None = None,
        on_signal: Callable[[str], None] | None = None,
    ) -> RunResult:
        """`run` in its own event loop (one ``asyncio.run`` per run). With *on_signal*, SIGINT and SIGTERM
        interrupt the run (see the module docstring) and *on_signal* is told what happens, one line each."""
        if on_signal is None:
            return asyncio.run(self.run(cfg, events=events, control=control))
        return asyncio.run(self.run_interruptible(cfg, events=events, control=control, on_signal=on_signal))

    async def run_interruptible(
        self,
        cfg: SyncConfig,
        *,
        events: SyncEvents | None = None,
        control: RunControl | None = None,
        on_signal: Callable[[str], None],
    ) -> RunResult:
        """`run`, stopped by the first SIGINT or SIGTERM and aborted by the second (in the main thread;
        elsewhere signals are left alone)."""
        control = control or RunControl()
        task = asyncio.current_task()
        assert task is not None
        seen: list[str] = []
        self.interrupted = None

        def interrupted(name: str) -> None:
            seen.append(name)
            if len(seen) == 1 and control.copying:
                self.interrupted = "stopped"
                control.stop(INTERRUPT_REASON)
                n = control.in_flight
                on_signal(
                    f"interrupted ({name}): finishing {n} item{'' if n == 1 else 's'} in flight; Ctrl-C again to abort"
                )
            elif self.interrupted != "aborted":
                what = "aborting: tags already pushed stay recorded" if control.copying else "nothing was changed"
                on_signal(f"interrupted ({name}){' while planning' if not control.copying else ''}: {what}")
                self.interrupted = "aborted"
                task.cancel()

        with _signal_handlers(asyncio.get_running_loop(), interrupted):
            try:
                result = await self.run(cfg, events=events, control=control)
            except asyncio.CancelledError:
                if self.interrupted != "aborted":
                    raise
                task.uncancel()
                return RunResult(dry_run=cfg.dry_run, interrupted="aborted")
        result.interrupted = self.interrupted
        return result

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

        def one() -> int:
            self.interrupted = None
            code = job()
            if self.interrupted is not None:  # a signal stopped the run: the daemon stops with it
                raise _Stopped(ABORTED if self.interrupted == "aborted" else 0)
            return code

        try:
            with _sigterm_interrupts():  # between runs, SIGTERM ends the wait as Ctrl-C does
                return run_on_schedule(cfg.schedule, one, on_wait=on_wait)
        except _Stopped as stopped:
            return stopped.code

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


@contextlib.contextmanager
def _signal_handlers(loop: asyncio.AbstractEventLoop, handler: Callable[[str], None]) -> Iterator[None]:
    """SIGINT and SIGTERM call *handler* (with the signal's name) in *loop* for the block; the handlers
    that were there before (asyncio.run's own, a daemon's) are put back after it. Outside the main thread
    (where signals cannot be handled) nothing is installed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        loop.add_signal_handler(sig, handler, sig.name)
    try:
        yield
    finally:
        for sig, before in previous.items():
            loop.remove_signal_handler(sig)
            signal.signal(sig, before)


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM raises `KeyboardInterrupt` (as SIGINT does) for the block, in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    before = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


__all__ = ["ABORTED", "INTERRUPT_REASON", "RunResult", "SyncService", "notify_run"]
