"""deploy/prometheus: the alerting rules pass `promtool check rules` and their unit tests (`promtool test rules`),
and every metric they use is one hubmirror writes (read from a real run's --metrics-file)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is not installed (scripts/install installs Debian's prometheus)")
        pytest.skip("promtool is not installed (scripts/install installs Debian's prometheus)")
    return found


def test_the_alert_rules_pass_promtool_check_and_their_unit_tests() -> None:
    promtool = _promtool()
    check = subprocess.run(
        [promtool, "check", "rules", "hubmirror-alerts.yaml"], cwd=RULES, capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "8 rules found" in check.stdout
    unit = [promtool, "test", "rules", "hubmirror-alerts.test.yaml"]
    test = subprocess.run(unit, cwd=RULES, capture_output=True, text=True, check=False)
    assert test.returncode == 0, test.stdout + test.stderr


def test_every_metric_the_rules_use_is_written_by_hubmirror() -> None:
    from hubmirror.metrics import SyncMetrics

    metrics = SyncMetrics()
    assert "hubmirror_freshness_slo_seconds" not in metrics.text().decode()  # no objective: no false 0
    metrics.set_freshness_slo(3600)
    metrics.last_success.set(1)
    metrics.remaining.set(1)
    metrics.abuse_backoffs.labels("registry-1.docker.io").inc(0)
    metrics.mismatches.labels("mirror.gcr.io", "mirror").inc(0)
    metrics.set_scheduler_leader(True)  # (serve only)
    exported = set(re.findall(r"^([a-z_]+)(?:\{| )", metrics.text().decode(), re.MULTILINE))
    rules = yaml.safe_load((RULES / "hubmirror-alerts.yaml").read_text())
    used = {
        name
        for group in rules["groups"]
        for rule in group["rules"]
        for name in re.findall(r"\b(hubmirror_[a-z_]+)\b", rule["expr"])
    }
    assert used and used <= exported, used - exported
