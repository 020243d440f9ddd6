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


def test_post_api_sync_with_repositories_checks_and_copies_only_those(env: Env) -> None:
    env.seed()
    assert env.cli("--images", "pyish,tiny").returncode == 0
    env.seed(generation={"pyish": {"3.14-slim": 1}, "tiny": {"1.0": 1}})  # both rebuilt upstream
    with serving(env, extra_env={"HUBMIRROR_API_TOKEN": TOKEN}, images=["pyish", "tiny"], prune=True) as srv:
        srv.idle(1)  # the first run (the whole selection) catches both up
        env.seed(generation={"pyish": {"3.14-slim": 2}, "tiny": {"1.0": 2}})  # rebuilt again
        env.hub.reset_counts()
        auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        bad = srv.request("POST", "/api/sync", b'{"repositories": "tiny"}', auth)
        assert bad[0] == 400
        code, body = srv.request("POST", "/api/sync", json.dumps({"repositories": ["tiny"]}).encode(), auth)
        assert code == 202 and json.loads(body)["repositories"] == ["tiny"]
        status = srv.idle(2)
    heads = {r.repo for r in env.hub.records if r.method == "HEAD" and r.kind == "manifest"}
    assert heads == {"library/tiny"}  # only tiny was checked …
    assert next(r for r in status["runs"] if r["status"] != "error")["status"] == "completed"
    rebuilt = env.indexes("tiny", generation={"1.0": 2})["1.0"].digest
    assert env.dest_digest("tiny", "1.0") == rebuilt  # … and copied
    slim = env.indexes("pyish", generation={"3.14-slim": 2})["3.14-slim"].digest
    assert env.dest_digest("pyish", "3.14-slim") != slim  # pyish waits for the schedule
    assert "latest" in env.dest_tags("pyish")  # no prune in a partial run: nothing of pyish deleted
