"""The report of one sync run: what happened to each image/tag group, totals, and the exit code.

Exit codes (`SyncReport.exit_code`, returned by ``hubmirror sync``):

* ``0`` — everything selected is done (copied, retagged, up to date, pruned or kept).
* ``1`` — at least one item failed (see its reason).
* ``75`` — nothing failed, but work was deferred because the pull budget ran out (``--max-pulls``, the
  Hub quota minus the reserve, or a quota 429 that came anyway); run again after the quota window.
  75 is ``EX_TEMPFAIL`` of sysexits.h (mail transfer agents report a deferred delivery with it): a
  temporary condition, not a failure. It is never ``2``, which typer/click give a usage error (a
  mistyped flag), so a deployment that takes 75 as success still sees a broken command line fail.

`SyncReport.run_status` names the same outcome as the state records a run (``completed``, ``failed``,
``deferred``).

JSON (`SyncReport.to_json`), schema ``version`` 1::

    {"version": 1, "exit_code": 0|1|75, "started": ISO, "finished": ISO, "run_id": int|null,
     "commit": str|null, "library": str|null, "dest": str|null, "dry_run": bool,
     "successful": ["docker.io/library/python:3.12", ...],   # source tags now right at the destination
     "failed": ["docker.io/library/foo:1", ...],              # source tags that failed
     "deferred": [...],                                       # source tags left for the next run
     "counts": {"copied": n, "retagged": n, ...},
     "totals": {...Totals fields...},
     "content_sources": [{"name": ..., "role": "source"|"mirror", "manifests": n, "blobs": n, "bytes": n,
                  "pulls": n, "mismatches": n, "errors": n, "dropped": str|null, "bad_digests": [...]}],
     "abuse_backoffs": {"registry-1.docker.io": n, ...},     # per registry: abuse-limit 429s backed off
     "items": [{"outcome": ..., "source": ..., "dest": ..., "tags": [...], "digest": ..., ...}]}
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ._units import size_text
from .redact import redact_url
from .store.mirrored import SourceStats
from .transfer import TransferStats

REPORT_VERSION: Final = 1
#: More failed, deferred or kept items than this with one reason share one row of the table.
FOLD_AT: Final = 3
#: Rows of one outcome the table shows (unless verbose); the rest share one counted row. A first sync
#: of the whole library copies ~2,250 tag groups: drawing them all took seconds (rich measures every cell).
MAX_ROWS: Final = 50

#: Exit codes of a sync (see the module docstring).
EXIT_DONE: Final = 0
EXIT_FAILED: Final = 1
EXIT_DEFERRED: Final = 75  # EX_TEMPFAIL (sysexits.h); usage errors are 2
#: A run's status in the state, per exit code.
RUN_STATUS: Final = {EXIT_DONE: "completed", EXIT_FAILED: "failed", EXIT_DEFERRED: "deferred"}


class Outcome(StrEnum):
    """What happened to one image/tag group."""

    COPIED = "copied"  # content copied, tags pushed
    RETAGGED = "retagged"  # content was already at the destination; only tags pushed
    UP_TO_DATE = "up_to_date"  # destination already right; nothing done
    DEFERRED = "deferred"  # pull budget spent; left for the next run
    FAILED = "failed"  # an error; see reason
    PRUNED = "pruned"  # tag hubmirror created that left the selection, deleted
    KEPT = "kept"  # tag that left the selection, kept (no --prune, or not created by hubmirror)


_DONE: Final = frozenset({Outcome.COPIED, Outcome.RETAGGED, Outcome.UP_TO_DATE})
_FOLDABLE: Final = frozenset({Outcome.FAILED, Outcome.DEFERRED, Outcome.KEPT})
_STYLE: Final = {
    Outcome.COPIED: "green",
    Outcome.RETAGGED: "cyan",
    Outcome.UP_TO_DATE: "dim",
    Outcome.DEFERRED: "yellow",
    Outcome.FAILED: "bold red",
    Outcome.PRUNED: "magenta",
    Outcome.KEPT: "dim",
}


@dataclass
class ReportItem:
    """One image/tag group: the tags of *dest* that share the content of *source*."""

    outcome: Outcome
    source: str  # full source reference, e.g. docker.io/library/python:3.12
    dest: str  # destination repository, e.g. registry:5000/mirror/python
    tags: list[str] = field(default_factory=list)
    digest: str | None = None  # the source digest the tags now point at (or would)
    previous_digest: str | None = None  # what the destination tag held before, if anything
    reason: str | None = None  # why deferred / failed / kept
    bytes: int = 0  # blob bytes written for this item
    pulls: int = 0  # source manifest GETs spent on this item
    mirrored: int = 0  # manifests of this item served by content mirrors (no pulls)

    def source_tags(self) -> list[str]:
        """``repo:tag`` on the source side for each tag (the source reference itself if no tags)."""
        if not self.tags:
            return [self.source]
        repo = _repository(self.source)
        return [f"{repo}:{t}" for t in self.tags]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["outcome"] = self.outcome.value
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ReportItem:
        known = {f.name for f in fields(cls)}
        args = {k: v for k, v in d.items() if k in known}
        args["outcome"] = Outcome(args["outcome"])
        args["tags"] = list(args.get("tags") or [])
        return cls(**args)


@dataclass
class Totals:
    """Counters for the whole run."""

    manifest_gets: int = 0  # source manifest GETs: what Docker Hub counts as pulls
    manifest_heads: int = 0  # source manifest HEADs (free)
    blobs_copied: int = 0
    blobs_skipped: int = 0  # already at the destination
    blobs_mounted: int = 0  # cross-repository mounts
    bytes: int = 0  # blob bytes written
    duration: float = 0.0  # seconds
    ratelimit_remaining: int | None = None  # the source's quota left at the end (None: not limited)
    ratelimit_limit: int | None = None
    ratelimit_window: int | None = None  # seconds, when the source names its window (Docker Hub: 21600)
    abuse_backoffs: int = 0  # 429s of an abuse limit (not the pull quota) backed off, all registries

    def add_stats(self, source: TransferStats, dest: TransferStats) -> None:
        """Add what the source and destination stores counted (blobs_skipped is the sync's to set)."""
        self.manifest_gets += source.manifest_gets
        self.manifest_heads += source.manifest_heads
        self.blobs_copied += dest.blob_uploads
        self.blobs_mounted += dest.blob_mounts
        self.bytes += dest.blob_bytes_written
        self.abuse_backoffs += source.abuse_backoffs + dest.abuse_backoffs


@dataclass
class SyncReport:
    """Everything a sync run did. Add items as they finish; `exit_code`, `to_json` and `render` summarise."""

    items: list[ReportItem] = field(default_factory=list)
    totals: Totals = field(default_factory=Totals)
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    finished: datetime | None = None
    run_id: int | None = None
    commit: str | None = None
    library: str | None = None
    dest: str | None = None
    dry_run: bool = False
    #: Tag sources of the run: per source the tags kept and, per dropped tag, the policy that dropped it.
    sources: list[dict[str, Any]] = field(default_factory=list)
    #: Per source of content: the source registries and each content mirror (what each served).
    content_sources: list[SourceStats] = field(default_factory=list)
    #: Per registry the run talked to (sources and the destination): abuse-limit 429s backed off.
    abuse_backoffs: dict[str, int] = field(default_factory=dict)
    #: Freshness: per tag written, (destination repository, seconds since its upstream change); and the
    #: upstream changes still not at the destination after the run, and the age of the oldest (seconds).
    lags: list[tuple[str, float]] = field(default_factory=list)
    pending_changes: int = 0
    oldest_pending: float = 0.0
    #: Workers cooperating on one run (a PostgreSQL state): the whole run, every worker's part of it
    #: (``{"workers": N, "exit_code": …, "status": …, "counts": {…}, "totals": {…}}``); None for a run of one
    #: process. The items above are this worker's; its exit code is the run's when that is worse.
    run: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.library is not None:  # the library URL as shown: without credentials
            self.library = redact_url(self.library)

    def add(
        self,
        outcome: Outcome | str,
        source: str,
        dest: str,
        tags: list[str] | tuple[str, ...] = (),
        *,
        digest: str | None = None,
        previous_digest: str | None = None,
        reason: str | None = None,
        bytes: int = 0,
        pulls: int = 0,
        mirrored: int = 0,
    ) -> ReportItem:
        """Record one item and return it."""
        item = ReportItem(
            Outcome(outcome), source, dest, list(tags), digest, previous_digest, reason, bytes, pulls, mirrored
        )
        self.items.append(item)
        return item

    def finish(self) -> None:
        """Stamp the end time and the duration."""
        self.finished = datetime.now(UTC)
        self.totals.duration = (self.finished - self.started).total_seconds()

    # ------------------------------------------------------------------ summaries

    def by_outcome(self, outcome: Outcome) -> list[ReportItem]:
        return [i for i in self.items if i.outcome is outcome]

    def counts(self) -> dict[str, int]:
        """Items per outcome, every outcome present (zero if none)."""
        out = {o.value: 0 for o in Outcome}
        for item in self.items:
            out[item.outcome.value] += 1
        return out

    @property
    def exit_code(self) -> int:
        """0: all done; 1: any failure; 75 (EX_TEMPFAIL): deferred by budget only (see the module docstring)."""
        outcomes = {i.outcome for i in self.items}
        whole = self.run.get("exit_code") if self.run is not None else None
        if Outcome.FAILED in outcomes or whole == EXIT_FAILED:
            return EXIT_FAILED
        if Outcome.DEFERRED in outcomes or whole == EXIT_DEFERRED:
            return EXIT_DEFERRED
        return EXIT_DONE

    @property
    def run_status(self) -> str:
        """The run's status as the state records it: ``completed``, ``failed`` or ``deferred``."""
        return RUN_STATUS[self.exit_code]

    def _refs(self, outcomes: frozenset[Outcome]) -> list[str]:
        return [ref for i in self.items if i.outcome in outcomes for ref in i.source_tags()]

    def successful(self) -> list[str]:
        """Source tags that are now right at the destination (copied, retagged or up to date)."""
        return self._refs(_DONE)

    def failed(self) -> list[str]:
        return self._refs(frozenset({Outcome.FAILED}))

    def deferred(self) -> list[str]:
        return self._refs(frozenset({Outcome.DEFERRED}))

    def failure_groups(self) -> list[FailureGroup]:
        """The failed items grouped by cause (`failure_cause`: the reason without the item's own names),
        the most frequent first: 645 tags "not found on HOST" are one group, not 645 rows."""
        groups: dict[str, FailureGroup] = {}
        for item in self.by_outcome(Outcome.FAILED):
            cause = failure_cause(item)
            groups.setdefault(cause, FailureGroup(cause)).items.append(item)
        return sorted(groups.values(), key=lambda g: -len(g.items))

    def failure_lines(self, *, examples: int = 3) -> list[str]:
        """``N failed, by cause:`` and a line per cause with its count and a few examples (none when
        nothing failed)."""
        groups = self.failure_groups()
        if not groups:
            return []
        total = sum(len(g.items) for g in groups)
        lines = [f"{total} failed, by cause:"]
        width = len(str(len(groups[0].items)))
        for g in groups:
            refs = g.examples()
            shown = ", ".join(refs[:examples]) + (f" (+{len(refs) - examples} more)" if len(refs) > examples else "")
            lines.append(f"  {len(g.items):>{width}} × {g.cause} — {shown}")
        return lines

    # ------------------------------------------------------------------ JSON

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": REPORT_VERSION,
            "exit_code": self.exit_code,
            "started": self.started.isoformat(),
            "finished": self.finished.isoformat() if self.finished else None,
            "run_id": self.run_id,
            "commit": self.commit,
            "library": redact_url(self.library) if self.library is not None else None,
            "dest": self.dest,
            "dry_run": self.dry_run,
            "successful": self.successful(),
            "failed": self.failed(),
            "deferred": self.deferred(),
            "counts": self.counts(),
            "totals": asdict(self.totals),
            "content_sources": [s.as_dict() for s in self.content_sources],
            "abuse_backoffs": self.abuse_backoffs,
            "freshness": {
                "lags": [{"repository": r, "seconds": round(sec, 3)} for r, sec in self.lags],
                "pending_changes": self.pending_changes,
                "oldest_pending_seconds": round(self.oldest_pending, 3),
            },
            "items": [i.to_dict() for i in self.items],
            "sources": self.sources,
            **({"run": self.run} if self.run is not None else {}),
        }

    def to_json(self, *, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SyncReport:
        version = d.get("version")
        if version != REPORT_VERSION:
            raise ValueError(f"unsupported report version {version!r} (expected {REPORT_VERSION})")
        totals_known = {f.name for f in fields(Totals)}
        sources_known = {f.name for f in fields(SourceStats)}
        return cls(
            items=[ReportItem.from_dict(i) for i in d.get("items", [])],
            totals=Totals(**{k: v for k, v in (d.get("totals") or {}).items() if k in totals_known}),
            started=datetime.fromisoformat(d["started"]),
            finished=datetime.fromisoformat(d["finished"]) if d.get("finished") else None,
            run_id=d.get("run_id"),
            commit=d.get("commit"),
            library=d.get("library"),
            dest=d.get("dest"),
            dry_run=bool(d.get("dry_run", False)),
            sources=list(d.get("sources") or []),
            lags=[(str(x["repository"]), float(x["seconds"])) for x in (d.get("freshness") or {}).get("lags", [])],
            pending_changes=int((d.get("freshness") or {}).get("pending_changes", 0)),
            oldest_pending=float((d.get("freshness") or {}).get("oldest_pending_seconds", 0.0)),
            content_sources=[
                SourceStats(**{k: v for k, v in s.items() if k in sources_known})
                for s in d.get("content_sources") or []
            ],
            abuse_backoffs={str(k): int(v) for k, v in (d.get("abuse_backoffs") or {}).items()},
            run=d.get("run"),
        )

    @classmethod
    def from_json(cls, text: str) -> SyncReport:
        return cls.from_dict(json.loads(text))

    # ------------------------------------------------------------------ human output

    def summary_line(self) -> str:
        """One line: counts, pulls, bytes, quota left, duration, exit code."""
        c = self.counts()
        parts = [
            f"copied {c['copied']}",
            f"retagged {c['retagged']}",
            f"up to date {c['up_to_date']}",
            f"deferred {c['deferred']}",
            f"failed {c['failed']}",
        ]
        if c["pruned"] or c["kept"]:
            parts += [f"pruned {c['pruned']}", f"kept {c['kept']}"]
        t = self.totals
        tail = [f"{t.manifest_gets} pulls", f"{t.manifest_heads} HEADs", size_text(t.bytes)]
        if self.mirrors:
            tail.insert(1, f"{sum(m.manifests for m in self.mirrors)} manifests from mirrors")
        if t.ratelimit_remaining is not None:
            quota = f"/{t.ratelimit_limit}" if t.ratelimit_limit is not None else ""
            tail.append(f"quota left {t.ratelimit_remaining}{quota}")
        if t.abuse_backoffs:
            tail.append(f"{t.abuse_backoffs} abuse-limit 429s backed off (pace too fast? --hub-rate)")
        tail.append(_duration(t.duration))
        prefix = "dry run: " if self.dry_run else ""
        return f"{prefix}{', '.join(parts)} · {' · '.join(tail)} · exit {self.exit_code}"

    def table(self, *, verbose: bool = False) -> Table:
        """A rich table: one row per item. Unless *verbose*, up-to-date and kept items, and more than
        `FOLD_AT` failed/deferred/kept items sharing a reason (a registry down fails every tag alike;
        failures share a *cause*, `failure_cause`: 645 tags "not found on HOST"), are folded into one
        counted row (failures with examples); past `MAX_ROWS` rows of one outcome, the rest share one row too (the
        report JSON lists every item)."""
        table = Table(title="hubmirror sync" + (" (dry run)" if self.dry_run else ""), show_lines=False)
        table.add_column("outcome", no_wrap=True)
        table.add_column("source")
        table.add_column("tags")
        table.add_column("digest", no_wrap=True)
        table.add_column("pulls", justify="right")
        table.add_column("size", justify="right")
        table.add_column("reason")
        order = list(Outcome)

        def why(i: ReportItem) -> str | None:  # failures alike by cause, others by their reason
            return failure_cause(i) if i.outcome is Outcome.FAILED else i.reason

        same = Counter((i.outcome, why(i)) for i in self.items)
        folded: dict[tuple[Outcome, str | None], int] = {}
        examples: dict[tuple[Outcome, str | None], list[str]] = {}  # of folded failures
        shown: Counter[Outcome] = Counter()
        more: Counter[Outcome] = Counter()
        for item in sorted(self.items, key=lambda i: order.index(i.outcome)):
            key = (item.outcome, why(item))
            quiet = item.outcome in (Outcome.UP_TO_DATE, Outcome.KEPT) and not item.reason
            alike = item.outcome in _FOLDABLE and item.reason and same[key] > FOLD_AT
            if not verbose and (quiet or alike):
                folded[key] = folded.get(key, 0) + 1
                if item.outcome is Outcome.FAILED:
                    examples.setdefault(key, []).extend(_display(ref) for ref in item.source_tags()[:1])
                continue
            if not verbose and shown[item.outcome] >= MAX_ROWS:
                more[item.outcome] += 1
                continue
            shown[item.outcome] += 1
            table.add_row(
                Text(item.outcome.value.replace("_", " "), style=_STYLE[item.outcome]),
                item.source if verbose else _display(_repository(item.source) if item.tags else item.source),
                _tags_text(item.tags),
                _short(item.digest or item.previous_digest),
                str(item.pulls) if item.pulls else "",
                size_text(item.bytes) if item.bytes else "",
                Text(item.reason or "", style="red" if item.outcome is Outcome.FAILED else ""),
            )
        for outcome, n in more.items():
            table.add_row(
                Text(outcome.value.replace("_", " "), style=_STYLE[outcome]),
                f"{n} more image/tag groups",
                "",
                "",
                "",
                "",
                "--verbose or the report JSON lists them",
            )
        for (outcome, reason), n in folded.items():
            some = examples.get((outcome, reason), [])
            table.add_row(
                Text(outcome.value.replace("_", " "), style=_STYLE[outcome]),
                f"{n} image/tag groups" + (f", e.g. {', '.join(some[:3])}" if some else ""),
                "",
                "",
                "",
                "",
                Text(reason or "", style="red" if outcome is Outcome.FAILED else ""),
            )
        return table

    @property
    def mirrors(self) -> list[SourceStats]:
        """The content mirrors used by the run (see `content_sources`)."""
        return [s for s in self.content_sources if s.role == "mirror"]

    def sources_table(self) -> Table:
        """One row per source of content: manifests and bytes served, pulls, digest mismatches, errors."""
        table = Table(title="content sources", title_justify="left")
        for col in ("source", "role", "manifests", "blobs", "bytes", "pulls", "mismatches", "errors", "note"):
            table.add_column(col, justify="right" if col not in ("source", "role", "note") else "left")
        for src in self.content_sources:
            note = f"dropped: {src.dropped}" if src.dropped else ""
            table.add_row(
                src.name,
                src.role,
                str(src.manifests),
                str(src.blobs),
                size_text(src.bytes),
                str(src.pulls) if src.role == "source" else "",
                Text(str(src.mismatches), style="bold red" if src.mismatches else ""),
                str(src.errors),
                Text(note, style="yellow" if note else ""),
            )
        return table

    def mirror_warnings(self) -> list[str]:
        """One line per content mirror that served wrong bytes or was dropped (the report names it)."""
        lines = []
        for m in self.mirrors:
            if m.mismatches:
                shown = ", ".join(_short(d) for d in m.bad_digests)
                lines.append(
                    f"content mirror {m.name} served {m.mismatches} digest mismatch(es) ({shown}); "
                    "that content came from the next source, verified"
                )
            if m.dropped:
                lines.append(f"content mirror {m.name} was dropped for the rest of the run: {m.dropped}")
        return lines

    def render(self, console: Console, *, verbose: bool = False) -> None:
        """Print the table and the summary line to *console* (the CLI passes its stderr console)."""
        if self.items:
            console.print(self.table(verbose=verbose))
        if self.mirrors:
            console.print(self.sources_table())
            for line in self.mirror_warnings():
                console.print(Text(line, style="yellow"))
        style = {EXIT_DONE: "green", EXIT_FAILED: "bold red", EXIT_DEFERRED: "yellow"}[self.exit_code]
        console.print(Text(self.summary_line(), style=style))


@dataclass
class FailureGroup:
    """Failed items that share one cause (`SyncReport.failure_groups`)."""

    cause: str
    items: list[ReportItem] = field(default_factory=list)

    def examples(self) -> list[str]:
        """The failed references as people write them (``python:3.12``), in report order."""
        return [_display(ref) for item in self.items for ref in item.source_tags()]


_DIGEST_TEXT = re.compile(r"\b(sha256:)?[0-9a-f]{12,64}\b…?")


def failure_cause(item: ReportItem) -> str:
    """A failure's reason without the item's own names (its reference, repository, tags, digests): the
    failures of one cause read alike (``not found on HOST``, ``HEAD manifest …: HTTP 500``)."""
    reason = item.reason or "failed"
    repo = _repository(item.source)
    path = repo.split("/", 1)[1] if "/" in repo and "." in repo.split("/", 1)[0] else repo
    names = {item.source, repo, path, *(f"{n}:{t}" for n in (repo, path) for t in item.tags)}
    names |= {f"{n}@{item.digest}" for n in (repo, path) if item.digest}
    for name in sorted((n for n in names if n), key=len, reverse=True):
        reason = reason.replace(name, "…")
    reason = _DIGEST_TEXT.sub(lambda m: (m.group(1) or "") + "…", reason)
    reason = re.sub(r"…(?:[:@]…)+", "…", reason)
    return reason.removeprefix("… ").strip() or "failed"


def _display(ref: str) -> str:
    """A source reference as people write it: ``docker.io/library/python:3.12`` → ``python:3.12``."""
    for prefix in ("docker.io/library/", "docker.io/"):
        if ref.startswith(prefix):
            return ref[len(prefix) :]
    return ref


def _tags_text(tags: list[str], most: int = 2) -> str:
    """The first *most* tags, and how many more."""
    shown = ", ".join(tags[:most])
    return f"{shown} (+{len(tags) - most})" if len(tags) > most else shown


def _repository(ref: str) -> str:
    """``docker.io/library/python:3.12`` → ``docker.io/library/python`` (digest and tag stripped)."""
    ref = ref.split("@", 1)[0]
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    return ref[:colon] if colon > slash else ref


def _short(digest: str | None) -> str:
    """The first 12 hex digits, as ``docker images`` shows IDs (sha256 is implied)."""
    if not digest:
        return ""
    algo, _, hexpart = digest.partition(":")
    if not hexpart:
        return digest
    return hexpart[:12] if algo == "sha256" else f"{algo}:{hexpart[:12]}"


def _duration(seconds: float) -> str:
    s = round(seconds)
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h}h{m:02d}m{s:02d}s"
    if m:
        return f"{m}m{s:02d}s"
    return f"{seconds:.1f}s"


__all__ = [
    "EXIT_DEFERRED",
    "EXIT_DONE",
    "EXIT_FAILED",
    "REPORT_VERSION",
    "RUN_STATUS",
    "FailureGroup",
    "Outcome",
    "ReportItem",
    "SyncReport",
    "Totals",
    "failure_cause",
]
