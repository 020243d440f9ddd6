"""Freshness from the command line: a rebuild at the source seen while the quota is spent stays pending (with
its age growing across runs, in the report and the metrics file), and the run that catches up observes a lag at
least as long as the wait; a first sync starts each tag's clock when the job first sees it."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from test_sync_support import Env


def _metric(path: Path, name: str) -> float:
    m = re.search(rf"^{re.escape(name)} (\S+)$", path.read_text(), re.MULTILINE)
    assert m is not None, f"{name} not in {path.read_text()}"
    return float(m.group(1))


def test_a_rebuild_seen_while_the_quota_is_spent_stays_pending_then_its_lag_is_observed(env: Env) -> None:
    env.seed(repos=["tiny"])
    report, metrics = env.root / "report.json", env.root / "metrics.prom"
    args = ("--images", "tiny", "--report", str(report), "--metrics-file", str(metrics))
    first = env.cli(*args)
    assert first.returncode == 0, first.stderr
    fresh = json.loads(report.read_text())["freshness"]
    assert fresh["pending_changes"] == 0 and len(fresh["lags"]) == 4
    assert all(x["seconds"] < 60 for x in fresh["lags"])  # a first sync: clocks start when the job sees the tags
    assert _metric(metrics, "hubmirror_pending_changes") == 0

    env.seed(repos=["tiny"], generation={"tiny": {"1.0": 1}})  # rebuilt upstream (no library change)
    env.hub.set_limit(100, remaining=0)
    deferred = env.cli(*args)
    assert deferred.returncode not in (0, 1), deferred.stderr
    first_age = json.loads(report.read_text())["freshness"]
    assert first_age["pending_changes"] == 4  # 1.0, 1, latest, old share the rebuilt image
    time.sleep(1.5)
    again = env.cli(*args)
    assert again.returncode == deferred.returncode
    later = json.loads(report.read_text())["freshness"]
    assert later["pending_changes"] == 4
    assert later["oldest_pending_seconds"] >= first_age["oldest_pending_seconds"] + 1.4
    assert _metric(metrics, "hubmirror_pending_changes") == 4
    assert _metric(metrics, "hubmirror_oldest_pending_change_seconds") >= 1.4

    env.hub.refill()
    done = env.cli(*args)
    assert done.returncode == 0, done.stderr
    caught = json.loads(report.read_text())["freshness"]
    assert caught["pending_changes"] == 0 and caught["oldest_pending_seconds"] == 0
    lags = [x["seconds"] for x in caught["lags"]]
    assert len(lags) == 4 and min(lags) >= 1.5  # at least as long as the wait
    assert {x["repository"] for x in caught["lags"]} == {env.key("tiny")}
    text = metrics.read_text()
    assert f'hubmirror_tag_lag_seconds_count{{repository="{env.key("tiny")}"}} 4.0' in text
    assert _metric(metrics, "hubmirror_pending_changes") == 0
    assert _metric(metrics, "hubmirror_last_success_timestamp_seconds") > 0
