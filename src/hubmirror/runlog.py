"""The log lines of runs (``hubmirror serve``, ``sync``, ``sync --daemon``) and ``--log-format``.

One line when a run starts (why it runs), one per failed item, one for the items deferred, and one when
it ends (outcome, exit code, pulls, bytes, deferred, failed, duration); waits for the pull quota say what
they wait for and when they look again. With ``--log-format json`` every line is one JSON object
(`JsonFormatter`): ``time``, ``level``, ``logger``, ``message``, ``event`` and the fields of that event
(docs/operations-logs.md lists them). A finished run's line always carries ``outcome`` and ``exit_code``.
"""

from __future__ import annotations

import json
import logging
import sys
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, TextIO

from rich.filesize import decimal

from . import redact as _redact

if TYPE_CHECKING:
    from .budget import QuotaWait
    from .service import RunResult

#: The values of ``--log-format``.
LOG_FORMATS: Final = ("text", "json")
#: The text format's line (what ``hubmirror serve`` always wrote).
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"

log = logging.getLogger("hubmirror.run")


def redact_url(url: str | None) -> str | None:
    """*url* as it may be logged (`hubmirror.redact.redact_url`: no credentials, no token-like parameters)."""
    return None if url is None else _redact.redact_url(url)


def redact_text(text: str) -> str:
    """*text* with every URL in it redacted (`hubmirror.redact.redact_text`)."""
    return _redact.redact_text(text)


def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items()}
    return value


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, then the
    record's fields (``extra={"fields": {...}}``), and ``exception`` with a traceback if there is one."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        extra = getattr(record, "fields", None)
        if isinstance(extra, Mapping):
            out.update({str(k): v for k, v in extra.items() if k not in out})
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def setup_logging(
    fmt: str = "text", *, level: int = logging.INFO, stream: TextIO | None = None, text_format: str = TEXT_FORMAT
) -> None:
    """Send every log record to *stream* (stderr) as text lines (*text_format*) or JSON objects (*fmt*,
    `LOG_FORMATS`)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(text_format))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)  # Python's warnings too: in JSON, every line of the log is an object


def _emit(level: int, message: str, event: str, **fields: Any) -> None:
    """Log one line of a run; URLs in it (error messages name them) lose their credentials."""
    log.log(level, "%s", redact_text(message), extra={"fields": _redacted({"event": event, **fields})})


def _run_name(number: int | None) -> str:
    return f"run {number}" if number is not None else "run"


def run_started(
    number: int | None, triggers: list[str], *, library: str | None = None, dest: str | None = None
) -> None:
    """The line a run begins with: why it runs."""
    reason = ", ".join(triggers)
    _emit(
        logging.INFO,
        f"{_run_name(number)} started ({reason})",
        "run_started",
        run=number,
        reason=reason,
        triggers=list(triggers),
        library=redact_url(library),
        dest=dest,
    )


def run_cancelled(number: int | None, triggers: list[str], *, began: datetime) -> None:
    """A run cancelled while planning (a shutdown): it changed nothing."""
    duration = round((datetime.now(UTC) - began).total_seconds(), 1)
    _emit(
        logging.WARNING,
        f"{_run_name(number)} cancelled while planning (nothing was changed) after {duration} s",
        "run_finished",
        run=number,
        reason=", ".join(triggers),
        outcome="cancelled",
        exit_code=None,
        duration=duration,
    )


def run_finished(result: RunResult, number: int | None, triggers: list[str], *, began: datetime) -> None:
    """One line per failed item, one for the deferred items, then the run's outcome line."""
    from .report import EXIT_DEFERRED, EXIT_DONE, Outcome

    run = _run_name(number)
    reason = ", ".join(triggers)
    report = result.report
    if result.error is not None or report is None:
        duration = round((datetime.now(UTC) - began).total_seconds(), 1)
        _emit(
            logging.ERROR,
            f"{run} failed before it started ({reason}): {result.error}",
            "run_finished",
            run=number,
            reason=reason,
            outcome="error",
            exit_code=1,
            error=result.error,
            pulls=0,
            bytes=0,
            deferred=0,
            failed=0,
            duration=duration,
        )
        return
    failed = report.by_outcome(Outcome.FAILED)
    deferred = report.by_outcome(Outcome.DEFERRED)
    for item in failed:
        tags = ", ".join(item.tags)
        _emit(
            logging.WARNING,
            f"{run}: failed {item.source} → {item.dest}{f' ({tags})' if tags else ''}: {item.reason}",
            "item_failed",
            run=number,
            run_id=report.run_id,
            source=item.source,
            dest=item.dest,
            tags=item.tags,
            reason=item.reason,
        )
    if deferred:
        reasons = Counter(i.reason or "" for i in deferred)
        why, _ = reasons.most_common(1)[0]
        more = f" (and {len(reasons) - 1} other reasons)" if len(reasons) > 1 else ""
        _emit(
            logging.WARNING,
            f"{run}: {len(deferred)} items deferred to the next run, e.g. {deferred[0].source}: {why}{more}",
            "items_deferred",
            run=number,
            run_id=report.run_id,
            count=len(deferred),
            reason=why,
            reasons=dict(reasons),
            examples=[i.source for i in deferred[:5]],
        )
    code = result.exit_code
    outcome = report.run_status
    t = report.totals
    duration = round(t.duration, 1)
    level = {EXIT_DONE: logging.INFO, EXIT_DEFERRED: logging.WARNING}.get(report.exit_code, logging.ERROR)
    counts = report.counts()
    _emit(
        level,
        f"{run} finished: {outcome}{' (dry run)' if result.dry_run else ''}, exit code {code} ({reason});"
        f" {t.manifest_gets} pulls, {decimal(t.bytes)}, {len(deferred)} deferred, {len(failed)} failed,"
        f" {counts['copied']} copied, {duration} s",
        "run_finished",
        run=number,
        run_id=report.run_id,
        reason=reason,
        outcome=outcome,
        exit_code=code,
        dry_run=result.dry_run,
        pulls=t.manifest_gets,
        bytes=t.bytes,
        deferred=len(deferred),
        failed=len(failed),
        counts=counts,
        duration=duration,
        began=report.started.isoformat(timespec="seconds"),
        commit=report.commit,
        ratelimit_remaining=t.ratelimit_remaining,
    )


def quota_wait(wait: QuotaWait) -> None:
    """A run waits for the pull quota (``--wait``): what for, and when it looks again."""
    _emit(logging.WARNING, wait.text(), "quota_wait", **wait.fields())


def quota_resumed(wait: QuotaWait) -> None:
    """The quota allows the work waited for: the run goes on."""
    _emit(logging.INFO, wait.text(), "quota_resumed", **wait.fields())


def next_run(code: int, at: datetime) -> None:
    """``sync --daemon``: the run's exit code, and when the next one starts."""
    at = at if at.tzinfo is not None else at.astimezone()
    _emit(
        logging.INFO,
        f"exit code {code}; next run at {at:%Y-%m-%d %H:%M %Z}".rstrip(),
        "next_run",
        exit_code=code,
        at=at.isoformat(timespec="seconds"),
    )


__all__ = [
    "LOG_FORMATS",
    "JsonFormatter",
    "next_run",
    "quota_resumed",
    "quota_wait",
    "redact_url",
    "run_cancelled",
    "run_finished",
    "run_started",
    "setup_logging",
]
