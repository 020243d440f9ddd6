"""The status page and /api/status per repository: current, or behind since when, by how many tags, why
(the quota, a failure, not yet copied) and when the run that catches it up comes, against the freshness
objective (``freshness_slo``). A real ``hubmirror serve`` with the Hub emulator's quota spent."""

from __future__ import annotations

import json
import time

from test_serve import TOKEN, serving
from test_sync_support import Env


def test_a_repository_behind_says_since_when_how_many_why_and_when_it_breaks_the_objective(env: Env) -> None:
    env.seed(repos=["tiny"])
    assert env.cli("--images", "tiny").returncode == 0  # mirrored: current
    env.seed(repos=["tiny"], generation={"tiny": {"1.0": 1}})  # rebuilt upstream
    env.hub.set_limit(100, remaining=0)  # … while the quota is spent
    with serving(env, extra_env={"HUBMIRROR_API_TOKEN": TOKEN}, images=["tiny"], freshness_slo="1s") as srv:
        srv.idle(1)
        time.sleep(1.2)
        code, _ = srv.request("POST", "/api/sync", b"", {"Authorization": f"Bearer {TOKEN}"})
        assert code == 202
        status = srv.idle(2)
        page = srv.request("GET", "/")[1].decode()
    [repo] = [r for r in status["repositories"] if r["name"] == env.key("tiny")]
    assert repo["state"] == "behind"
    fresh = repo["freshness"]
    assert fresh["behind_tags"] == 4 and fresh["reasons"] == ["quota"]
    assert fresh["behind_seconds"] >= 1.0 and fresh["slo_breached"] is True
    assert fresh["catch_up"] == status["next_run"]  # the next scheduled run takes it first
    assert status["freshness"]["slo_seconds"] == 1.0 and status["freshness"]["slo_breached"] == 1
    assert status["freshness"]["pending_changes"] == 4
    assert "behind since" in page and "(quota)" in page
    json.dumps(status)  # JSON-ready
