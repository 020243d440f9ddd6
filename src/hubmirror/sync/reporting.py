"""The report events of a run: failures the plan found, a dry run's plan, the totals at the end."""

from __future__ import annotations

from ..config import SyncConfig
from ..plan import Plan
from ..report import Outcome, SyncReport, Totals
from ..store import TransferStats
from ..store.mirrored import MirroredStore, SourceStats, source_stats
from ..store.registry import RegistryStore
from .selection import source_key
from .stores import Destination, Sources


def finish_report(report: SyncReport, sources: Sources, dest: Destination, cfg: SyncConfig) -> None:
    report.finish()
    add_transfers(report.totals, sources, dest)
    # Abuse-limit 429s per registry (the pace is too fast where they add up); an OCI layout has none.
    stores = [*sources.stores.values(), *([dest.store] if isinstance(dest.store, RegistryStore) else [])]
    for store in stores:
        report.abuse_backoffs[store.name] = report.abuse_backoffs.get(store.name, 0) + store.stats.abuse_backoffs
    report.content_sources = content_sources(sources)
    hub = sources.stores.get(cfg.source)
    rl = hub.ratelimit if hub is not None else None
    if rl is not None:
        report.totals.ratelimit_remaining = rl.remaining
        report.totals.ratelimit_limit = rl.limit
        report.totals.ratelimit_window = rl.window


def add_transfers(totals: Totals, sources: Sources, dest: Destination) -> None:
    """Add what the run's stores transferred so far to *totals*: from the sources, to the destination (the
    report's at the end; a worker's summary each time it finishes a repository)."""
    for store in sources.stores.values():
        totals.add_stats(store.stats, TransferStats())
    totals.add_stats(TransferStats(), dest.store.stats)


def content_sources(sources: Sources) -> list[SourceStats]:
    """What each source of content served: the registries and content mirrors the run asked anything. Those it
    never asked (Docker Hub and its default mirrors in a run that reads only a local registry) are left out:
    all-zero rows say nothing."""
    out: list[SourceStats] = []
    for store in sources.stores.values():
        own, *_ = source_stats(store)
        st = store.stats
        if st.manifest_heads or st.manifest_gets or st.blob_gets or own.errors:
            out.append(own)
        for m in store.mirrors if isinstance(store, MirroredStore) else ():
            stats = m.stats
            if m.answered or stats.manifests or stats.blobs or stats.errors or stats.mismatches or stats.dropped:
                out.append(stats)
    return out


def add_failed(plan: Plan, report: SyncReport, dest: Destination) -> None:
    """Failures known from the plan: selection errors and tag sources not listed (the tag sources go to the
    report too), tags that could not be checked, conflicts. A worker adds its whole selection's plan (not
    checked), then each repository's (no selection of its own)."""
    for what, reason in plan.selection_errors:
        report.add(Outcome.FAILED, what, dest.name, reason=reason)
    report.sources += [listing.to_dict() for listing in plan.sources]
    for listing in plan.sources:
        if listing.error:
            reason = f"{listing.error}; nothing is pruned in this run"
            report.add(Outcome.FAILED, listing.name, source_key(listing, dest), reason=reason)
    for target, reason in plan.failed:
        tags = [target.tag] if target.tag else []
        report.add(Outcome.FAILED, target.canonical, dest.key(target.dest_repo), tags, reason=reason)
    for c in plan.conflicts:
        report.add(
            Outcome.FAILED,
            c.target.canonical,
            dest.key(c.target.dest_repo),
            [c.target.tag or ""],
            digest=c.upstream_digest,
            previous_digest=c.dest_digest,
            reason=(
                f"conflict: the destination tag holds {c.dest_digest[:19]}…, which hubmirror did not write; "
                "left as it is (--overwrite replaces it)"
            ),
        )


def plan_report(plan: Plan, report: SyncReport, dest: Destination) -> None:
    """A dry run's report: what would be copied, retagged or deferred (nothing was done)."""
    add_failed(plan, report, dest)
    for u in plan.up_to_date:
        report.add(Outcome.UP_TO_DATE, u.target.canonical, dest.key(u.target.dest_repo), [u.target.tag or ""])
    for item in plan.items:
        outcome = Outcome.RETAGGED if item.kind == "retag" else Outcome.COPIED
        report.add(
            outcome,
            item.canonical,
            dest.key(item.dest_repo),
            item.tags,
            digest=item.upstream_digest,
            previous_digest=item.previous_digest,
            reason=f"would {item.kind} ({item.reason})",
            pulls=item.estimated_pulls,
        )


__all__ = ["add_failed", "add_transfers", "content_sources", "finish_report", "plan_report"]
