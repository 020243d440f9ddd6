"""The docs site: it builds with `mkdocs build --strict` (no broken link, nav entry or anchor), its generated
references name every config key and every flag, and what the pages quote from the code still exists."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hubmirror._docgen import all_flags, cli_reference, config_keys, config_reference
from hubmirror.config import SyncConfig
from hubmirror.metrics import SyncMetrics

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
#: Pages other developers write; the nav lists them in comments until they land.
PARALLEL = {"emulator.md", "docker-hub.md", "content-mirrors.md", "security.md", "reliability.md"}


def test_the_site_builds_strict(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")
    p = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    html = (tmp_path / "site" / "configuration" / "index.html").read_text()
    assert "<table>" in html and "max_pulls" in html and "hubmirror:config-reference" not in html


def test_every_config_key_and_flag_is_in_the_generated_reference() -> None:
    text = config_reference()
    keys = {k.path for k in config_keys()}
    for name, field in SyncConfig.model_fields.items():
        assert (field.alias or name) in keys
    for k in config_keys():
        assert f"`{k.path}`" in text and k.doc, f"{k.path} has no description (a comment in config.py or a flag help)"
    cli = cli_reference()
    for flag in all_flags():
        assert f"`{flag}`" in cli, flag
    assert "### `hubmirror sync`" in cli and "### `hubmirror library list`" in cli


def test_the_nav_lists_every_page_and_names_the_pages_written_in_parallel() -> None:
    text = (ROOT / "mkdocs.yml").read_text()
    nav = set(re.findall(r"^\s*-\s[^:#]+:\s*(\S+\.md)\s*$", text, re.M))
    assert nav == {p.name for p in DOCS.glob("*.md")} - PARALLEL | (nav & PARALLEL)
    for page in PARALLEL - nav:
        assert re.search(rf"^\s*# - .*: {re.escape(page)}$", text, re.M), (
            f"{page} is not in the nav, not even commented"
        )
    yaml.safe_load(text.replace("!!python", ""))


def test_messages_quoted_in_troubleshooting_exist_in_the_code() -> None:
    source = "\n".join(p.read_text() for p in (ROOT / "src" / "hubmirror").rglob("*.py"))
    quoted = re.findall(r"\*\*`([^`]+)`\*\*", (DOCS / "troubleshooting.md").read_text())
    assert len(quoted) >= 15
    for message in quoted:
        if message.startswith(("No such option", "http: server gave")):
            continue  # click's, and containerd's and podman's own (tests see them: test_sync_budget, layout_mirror)
        message = message.replace("prune refused", "refused")  # printed as "prune " + the item's reason
        # Messages are composed (f-strings, joined parts): each piece between placeholders and separators.
        pieces = re.split(
            r"…|\.\.\.|[;:()\[\]]|python|REGISTRY/REPO|registry\.local:5000|'ci'|sha256|alpah|alpha|/var/lib|12",
            message,
        )
        pieces = [p.strip(" ,.") for p in pieces if len(p.strip(" ,.")) >= 8]
        assert pieces, message
        for piece in pieces:
            assert piece in source, f"{piece!r} of {message!r}"


def test_alert_rules_use_metrics_hubmirror_exports_and_the_docs_name_each_alert() -> None:
    metrics = SyncMetrics()
    metrics.set_freshness_slo(3600)
    metrics.set_scheduler_leader(True)  # (serve only)
    exported = {m.name for m in metrics.registry.collect()}
    exported |= {f"{n}_total" for n in exported}
    rules = yaml.safe_load((DOCS.parent / "deploy" / "prometheus" / "hubmirror-alerts.yaml").read_text())
    operations = (DOCS / "operations.md").read_text()
    for rule in rules["groups"][0]["rules"]:
        assert f"`{rule['alert']}`" in operations, rule["alert"]
        for name in re.findall(r"hubmirror_\w+", rule["expr"]):
            assert name in exported, name
