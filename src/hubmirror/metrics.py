"""Prometheus metrics of sync runs: served over HTTP in daemon mode, or written to a textfile
(node_exporter's textfile collector) after a one-shot run from cron or a Kubernetes CronJob."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
    write_to_textfile,
)

from .report import Outcome, SyncReport

#: Buckets of the lag histogram: a minute to a week (Docker picks a commit up in a median of 3 minutes).
LAG_BUCKETS = (60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0, 43200.0, 86400.0, 172800.0, 604800.0)


class SyncMetrics:
    """Gauges and counters updated from each run's `SyncReport`; one private registry per instance."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.last_run = Gauge("hubmirror_last_run_timestamp_seconds", "When the last sync run finished.", registry=r)
        self.exit_code = Gauge("hubmirror_last_run_exit_code", "0 done, 1 failures, 75 deferred by budget.", registry=r)
        self.duration = Gauge("hubmirror_last_run_duration_seconds", "Wall time of the last run.", registry=r)
        self.items = Gauge("hubmirror_last_run_items", "Image/tag groups by outcome.", ["outcome"], registry=r)
        self.remaining = Gauge(
            "hubmirror_source_ratelimit_remaining", "Pulls left on the source (ratelimit-remaining).", registry=r
        )
        self.runs = Counter("hubmirror_runs", "Sync runs, by exit code.", ["exit_code"], registry=r)
        self.pulls = Counter("hubmirror_source_manifest_gets", "Source manifest GETs (Docker Hub pulls).", registry=r)
        self.heads = Counter("hubmirror_source_manifest_heads", "Source manifest HEADs (free).", registry=r)
        self.bytes = Counter("hubmirror_blob_bytes_written", "Blob bytes written to the destination.", registry=r)
        self.abuse_backoffs = Counter(
            "hubmirror_abuse_backoffs",
            "429s of a registry's abuse limit (not the pull quota), backed off and retried, per registry.",
            ["registry"],
            registry=r,
        )
        self.in_progress = Gauge("hubmirror_run_in_progress", "1 while a sync run is in progress.", registry=r)
        # Per source of content: each source registry (role "source") and each content mirror ("mirror").
        by = ["source", "role"]
        self.served_manifests = Counter(
            "hubmirror_content_manifests_served", "Manifests served (verified), per source of content.", by, registry=r
        )
        self.served_bytes = Counter(
            "hubmirror_content_bytes_served", "Blob bytes served, per source of content.", by, registry=r
        )
        self.source_pulls = Counter(
            "hubmirror_content_pulls", "Manifest GETs on a source registry (Docker Hub pulls); 0 for mirrors.", by,
            registry=r,
        )  # fmt: skip
        self.mismatches = Counter(
            "hubmirror_content_digest_mismatches",
            "Content whose bytes did not match its digest (then taken from the next source), per source.",
            by,
            registry=r,
        )
        self.dropped = Gauge(
            "hubmirror_content_mirror_dropped", "1 if the content mirror was dropped in the last run.", by, registry=r
        )
        # Freshness: how long upstream changes take to reach the mirror (labels: repository, never tag).
        self.tag_lag = Histogram(
            "hubmirror_tag_lag_seconds",
            "Seconds from an upstream change of a tag to its write at the destination, one per tag written.",
            ["repository"],
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.pending_changes = Gauge(
            "hubmirror_pending_changes",
            "Tags whose upstream changed and that are not yet written (deferred, failed or not reached).",
            registry=r,
        )
        self.oldest_pending = Gauge(
            "hubmirror_oldest_pending_change_seconds",
            "Age of the oldest upstream change not yet at the destination (0 when none).",
            registry=r,
        )
        self._freshness_slo: Gauge | None = None  # only exported once a freshness_slo is set (no false 0)
        self._scheduler_leader: Gauge | None = None  # only exported by hubmirror serve
        self.last_success = Gauge(
            "hubmirror_last_success_timestamp_seconds", "When the last run that did everything finished.", registry=r
        )
        for outcome in Outcome:
            self.items.labels(outcome.value)

    def observe(self, report: SyncReport) -> None:
        """Record one finished run."""
        t = report.totals
        if report.finished is not None:
            self.last_run.set(report.finished.timestamp())
        self.exit_code.set(report.exit_code)
        self.duration.set(t.duration)
        for outcome, n in report.counts().items():
            self.items.labels(outcome).set(n)
        if t.ratelimit_remaining is not None:
            self.remaining.set(t.ratelimit_remaining)
        self.runs.labels(str(report.exit_code)).inc()
        self.pulls.inc(t.manifest_gets)
        self.heads.inc(t.manifest_heads)
        self.bytes.inc(t.bytes)
        for repository, seconds in report.lags:
            self.tag_lag.labels(repository).observe(seconds)
        self.pending_changes.set(report.pending_changes)
        self.oldest_pending.set(report.oldest_pending)
        if report.exit_code == 0 and report.finished is not None:
            self.last_success.set(report.finished.timestamp())
        for name, n in report.abuse_backoffs.items():
            self.abuse_backoffs.labels(name).inc(n)
        for src in report.content_sources:
            labels = (src.name, src.role)
            self.served_manifests.labels(*labels).inc(src.manifests)
            self.served_bytes.labels(*labels).inc(src.bytes)
            self.source_pulls.labels(*labels).inc(src.pulls)
            self.mismatches.labels(*labels).inc(src.mismatches)
            if src.role == "mirror":
                self.dropped.labels(*labels).set(1 if src.dropped else 0)

    def set_freshness_slo(self, seconds: float) -> None:
        """Export the config's ``freshness_slo`` (the alerting rules compare the oldest pending change with it)."""
        if self._freshness_slo is None:
            self._freshness_slo = Gauge(
                "hubmirror_freshness_slo_seconds", "The config's freshness_slo, in seconds.", registry=self.registry
            )
        self._freshness_slo.set(seconds)

    def set_scheduler_leader(self, leader: bool) -> None:
        """Export whether this ``hubmirror serve`` schedules the runs (1; always with a SQLite state) or is a
        replica that does not (0)."""
        if self._scheduler_leader is None:
            self._scheduler_leader = Gauge(
                "hubmirror_scheduler_leader",
                "1 if this hubmirror serve schedules the runs (of its replicas on one state), else 0.",
                registry=self.registry,
            )
        self._scheduler_leader.set(1 if leader else 0)

    def text(self) -> bytes:
        """The metrics in Prometheus text format (for a ``/metrics`` handler)."""
        return generate_latest(self.registry)

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        """Serve ``/metrics`` on *addr*:*port* from a background thread."""
        start_http_server(port, addr=addr, registry=self.registry)

    def write(self, path: Path) -> None:
        """Write the metrics atomically to *path* (Prometheus text format)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        write_to_textfile(str(path), self.registry)
