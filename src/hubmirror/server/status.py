"""What the status page and ``GET /api/status`` show: the state's runs, repositories, deferred work and
library commits, with the server's own view (the run in progress, the last report's failures, triggers).

Both are served without authentication: every text in them goes through `public` (URLs without their
credentials; a rejected credential named by its registry, not by its user or where it came from).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from ..redact import hide_credential_owners, redact_text, redact_url
from ..report import Outcome, SyncReport
from ..state import RunRecord, State
from .runner import PENDING_REASONS, SyncLoop

#: A run's status in the state → the exit code the CLI would have given.
_EXIT = {"completed": 0, "failed": 1, "deferred": 75}


def _iso(when: datetime | None) -> str | None:
    return when.astimezone(UTC).isoformat(timespec="seconds") if when is not None else None


#: A repository's state on the status page → its place (failing first, then behind, then the rest).
_ORDER = {"failed": 0, "behind": 1, "ok": 2}


def _run(r: RunRecord, current_began: datetime | None = None) -> dict[str, Any]:
    """A run of the state. Its ``started`` is when its planning ended (the state records the run then) and
    copying began; ``began`` is when the run itself began (its duration counts from there)."""
    s = r.summary or {}
    duration = s.get("duration")
    began: datetime | None = None
    if r.finished is not None and isinstance(duration, int | float):
        began = min(r.started, r.finished - timedelta(seconds=duration))
    elif r.status == "running":
        began = current_began
    began = began or r.started
    return {
        "id": r.id,
        "status": r.status,
        "exit_code": _EXIT.get(r.status),
        "pulls": s.get("manifest_gets", 0),
        "bytes": s.get("bytes", 0),
        "duration": duration,
        "planning": round((r.started - began).total_seconds(), 1),  # seconds from began to copying started
        "began": _iso(began),
        "started": _iso(r.started),
        "copying_started": _iso(r.started),
        "finished": _iso(r.finished),
        "commit": r.commit,
        "error": None,
    }


def _quota(runs: list[RunRecord], last: SyncReport | None) -> dict[str, Any]:
    """The pull quota as last reported by the source, with when the window refills it fully."""
    remaining = limit = window = None
    seen: datetime | None = None
    if last is not None:
        t = last.totals
        remaining, limit, window, seen = t.ratelimit_remaining, t.ratelimit_limit, t.ratelimit_window, last.finished
    else:
        for r in runs:
            s = r.summary or {}
            if r.finished is not None and "ratelimit_limit" in s:
                remaining, limit, window = s.get("ratelimit_remaining"), s["ratelimit_limit"], s.get("ratelimit_window")
                seen = r.finished
                break
    refill = seen + timedelta(seconds=window) if seen is not None and window else None
    return {
        "remaining": remaining,
        "limit": limit,
        "window": window,
        "observed": _iso(seen),
        "full_refill_by": _iso(refill),
        "limited": limit is not None,
    }


def public(value: Any) -> Any:
    """*value* (JSON-ready data) with every string as a page without authentication may show it."""
    if isinstance(value, str):
        return hide_credential_owners(redact_text(value))
    if isinstance(value, dict):
        return {public(k): public(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [public(v) for v in value]
    return value


def collect(state: State, loop: SyncLoop, *, runs: int = 20) -> dict[str, Any]:
    """The whole status as JSON-ready data (``runs`` newest first; ``repositories`` failing first, then behind
    (work deferred), then the rest, each by destination name), fit for a page without authentication
    (`public`). ``scheduler`` says whether this process schedules the runs (``leader``) and, for replicas on
    one PostgreSQL state, this ``replica``'s name and that of the ``scheduler`` (None: none holds the lock now)."""
    cfg = loop.cfg
    records = state.runs(runs)
    live = loop.current
    # The newest run still running is the one in progress here (an older one was interrupted).
    running = next((r.id for r in records if r.status == "running"), None)
    out_runs = [_run(r, live.started if live is not None and r.id == running else None) for r in records]
    # Runs that stopped before they reached the state (an unreachable library or registry) are known to
    # this server only; they count as failed (exit code 1).
    for f in loop.finished:
        if f.result is not None and f.result.error is not None:
            out_runs.append(
                {
                    "id": None,
                    "status": "error",
                    "exit_code": 1,
                    "pulls": 0,
                    "bytes": 0,
                    "duration": (f.finished - f.started).total_seconds(),
                    "planning": None,
                    "began": _iso(f.started),
                    "started": _iso(f.started),
                    "copying_started": None,
                    "finished": _iso(f.finished),
                    "commit": None,
                    "error": f.result.error,
                }
            )
    out_runs.sort(key=lambda r: r["began"] or "", reverse=True)
    out_runs = out_runs[:runs]

    report = loop.last_report
    failed: dict[str, list[dict[str, Any]]] = {}
    if report is not None:
        for item in report.by_outcome(Outcome.FAILED):
            failed.setdefault(item.dest, []).append(
                {"source": item.source, "tags": item.tags, "reason": item.reason or ""}
            )
    deferred: dict[str, list[dict[str, Any]]] = {}
    for d in state.deferred():
        deferred.setdefault(d.dest_repo, []).append(
            {"source": d.source_ref, "tags": list(d.tags), "reason": d.reason, "since": _iso(d.since)}
        )
    # Freshness: the upstream changes not yet at the destination, per repository (since when, how many, why).
    now = datetime.now(UTC)
    behind: dict[str, dict[str, Any]] = {}
    for c in state.pending_changes():
        b = behind.setdefault(c.dest_repo, {"since": c.changed_at, "tags": 0, "reasons": set()})
        b["since"] = min(b["since"], c.changed_at)
        b["tags"] += 1
        b["reasons"].add(_why(c.reason))
    for b in behind.values():
        b["age"] = (now - b["since"]).total_seconds()
    slo = cfg.freshness_slo
    repos: dict[str, dict[str, Any]] = {}
    for t in state.tags():
        r = repos.setdefault(t.dest_repo, {"tags": 0, "last_change": None})
        r["tags"] += 1
        if r["last_change"] is None or t.synced_at > r["last_change"]:
            r["last_change"] = t.synced_at
    for name in set(failed) | set(deferred) | set(behind):
        repos.setdefault(name, {"tags": 0, "last_change": None})

    def freshness(name: str) -> dict[str, Any] | None:
        b = behind.get(name)
        if b is None:
            return None
        age = b["age"]
        return {
            "behind_since": _iso(b["since"]),
            "behind_seconds": round(age, 1),
            "behind_tags": b["tags"],
            "reasons": sorted(b["reasons"]),
            "slo_breached": slo is not None and age > slo,
            "catch_up": _iso(loop.next_scheduled) if loop.next_scheduled else "the next run",
        }

    repositories = [
        {
            "name": name,
            "state": "failed" if name in failed else "behind" if name in deferred or name in behind else "ok",
            "tags": r["tags"],
            "last_change": _iso(r["last_change"]),
            "deferred": deferred.get(name, []),
            "failed": failed.get(name, []),
            "freshness": freshness(name),
        }
        for name, r in sorted(repos.items())
    ]
    repositories.sort(key=lambda r: _ORDER[r["state"]])  # failing, then behind, then the rest (by name)

    pending, pending_count = loop.pending, loop.pending_count
    replicas = loop.replicas
    scheduler: dict[str, Any] = {"leader": loop.leads, "replica": None, "scheduler": None, "since": None}
    if replicas is not None:  # the triggers any replica accepted wait in the state for the scheduler
        waiting = state.pending_triggers(replicas.job)
        pending = pending + [_waiting(r, repos, n) for r, repos, n in waiting[:PENDING_REASONS]]
        if len(waiting) > PENDING_REASONS:
            pending.append(f"{len(waiting) - PENDING_REASONS} more")
        pending_count += sum(n for _, _, n in waiting)
        holder = replicas.replica if replicas.leader else state.scheduler(replicas.job)
        scheduler.update(replica=replicas.replica, scheduler=holder, since=_iso(replicas.since))
    newest = next((r.commit for r in records if r.commit), None)
    if loop.current is not None and loop.current.commit:
        newest = loop.current.commit
    synced = state.library_commit(cfg.library) if cfg.reads_library else None
    current = loop.current
    status = {
        "dest": cfg.dest,
        "library": {
            "source": redact_url(cfg.library) if cfg.reads_library else None,
            "synced": synced,
            "newest": newest,
            "up_to_date": synced is not None and synced == newest,
        },
        "quota": _quota(records, report),
        "current": current.to_dict() if current is not None else None,
        "pending": pending,
        "pending_triggers": pending_count,
        "scheduler": scheduler,
        "next_run": _iso(loop.next_scheduled),
        "schedule": cfg.schedule,
        "runs": out_runs,
        "repositories": repositories,
        "freshness": {
            "slo_seconds": slo,
            "pending_changes": sum(b["tags"] for b in behind.values()),
            "oldest_pending_seconds": round(max((b["age"] for b in behind.values()), default=0.0), 1),
            "repositories_behind": len(behind),
            "slo_breached": sum(1 for r in repositories if (r["freshness"] or {}).get("slo_breached")),
        },
        "totals": {
            "repositories": len(repositories),
            "tags": sum(r["tags"] for r in repositories),
            "deferred": sum(len(r["deferred"]) for r in repositories),
            "failed": sum(len(r["failed"]) for r in repositories),
        },
        "server": {
            "runs_started": loop.runs_started,
            "stopping": loop.stopping,
            "now": _iso(datetime.now(UTC)),
        },
    }
    shown: dict[str, Any] = public(status)
    return shown


def _waiting(reason: str, repositories: list[str] | None, times: int) -> str:
    """A trigger waiting in the state, as `SyncLoop.pending` shows one: ``api (python, redis) (×2)``."""
    text = reason
    if repositories and not reason.startswith("api:"):  # an API trigger's reason names them already
        more = " …" if len(repositories) > 5 else ""
        text += f" ({', '.join(repositories[:5])}{more})"
    return text + (f" (×{times})" if times > 1 else "")


def _why(reason: str) -> str:
    """A pending change's reason, in the status page's words: the quota, a failure, or not yet checked."""
    if reason.startswith("deferred"):
        return "quota" if ("pull" in reason or "quota" in reason or "budget" in reason) else "deferred"
    if reason.startswith("failed"):
        return "failure"
    return "not yet checked"


__all__ = ["collect", "public"]
