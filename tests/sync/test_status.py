"""``hubmirror status`` tells what the state knows after real syncs: tags, library commit, deferred work, runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from test_sync_support import Env

HUBMIRROR = str(Path(sys.executable).parent / "hubmirror")


def status(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HUBMIRROR, "status", "--state", str(state), *args], capture_output=True, text=True)


def test_status_shows_tags_library_commit_deferred_work_and_runs(env: Env) -> None:
    env.seed()
    first = env.cli("--max-pulls", "7")
    assert first.returncode == 75, first.stderr
    p = status(env.state_path, "--json")
    assert p.returncode == 0, p.stderr
    info = json.loads(p.stdout)
    assert info["deferred"] and all(d["reason"].startswith("--max-pulls 7") for d in info["deferred"])
    assert info["runs"][0]["status"] == "deferred" and info["runs"][0]["summary"]["manifest_gets"] <= 7
    assert info["libraries"] == {}  # not synced completely yet

    second = env.cli()
    assert second.returncode == 0, second.stderr
    info = json.loads(status(env.state_path, "--json").stdout)
    assert info["deferred"] == []
    assert [r["status"] for r in info["runs"][:2]] == ["completed", "deferred"]
    assert list(info["libraries"].values()) == [env.commits[-1]]
    assert info["tags"] == info["tags_created"] > 0

    human = status(env.state_path)
    assert human.returncode == 0
    text = " ".join(human.stderr.split())
    assert f"{info['tags']} tags in {info['repositories']} repositories" in text
    assert "completed" in text and env.commits[-1][:12] in text


def test_status_without_a_state_says_so(tmp_path: Path) -> None:
    p = status(tmp_path / "none.db")
    assert p.returncode == 1 and "no sync has run" in " ".join(p.stderr.split())
