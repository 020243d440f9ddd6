"""Prometheus metrics of sync runs: a textfile after each CLI run, and /metrics served for the daemon."""

from __future__ import annotations

import urllib.request
from pathlib import Path

from test_sync_support import Env

from hubmirror.metrics import SyncMetrics
from hubmirror.report import Outcome, SyncReport
from hubmirror.testing.registry import free_port


def _value(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics:\n{text}")


def test_cli_run_writes_a_textfile_with_exit_code_outcomes_and_pulls(env: Env, tmp_path: Path) -> None:
    env.seed()
    prom = tmp_path / "textfile" / "hubmirror.prom"
    p = env.cli("--max-pulls", "7", "--metrics-file", str(prom))
    assert p.returncode == 75, p.stderr
    text = prom.read_text()
    assert _value(text, "hubmirror_last_run_exit_code") == 75
    assert 0 < _value(text, "hubmirror_source_manifest_gets_total") <= 7
    assert _value(text, 'hubmirror_last_run_items{outcome="deferred"}') > 0
    assert _value(text, "hubmirror_source_ratelimit_remaining") == env.hub.remaining


def test_daemon_metrics_are_served_over_http_and_accumulate() -> None:
    metrics = SyncMetrics()
    port = free_port()
    metrics.serve(port)
    for pulls in (3, 4):
        rep = SyncReport()
        rep.add(Outcome.COPIED, "docker.io/library/x:1", "r/x", ["1"], pulls=pulls)
        rep.totals.manifest_gets = pulls
        rep.totals.ratelimit_remaining = 90
        rep.finish()
        metrics.observe(rep)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    assert _value(text, "hubmirror_source_manifest_gets_total") == 7
    assert _value(text, 'hubmirror_runs_total{exit_code="0"}') == 2
    assert _value(text, 'hubmirror_last_run_items{outcome="copied"}') == 1
    assert _value(text, "hubmirror_source_ratelimit_remaining") == 90
