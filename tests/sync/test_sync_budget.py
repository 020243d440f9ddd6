"""The pull budget: the sync reads the quota from free HEADs, keeps the reserve, defers what it cannot
afford (exit 75) and resumes later without redoing anything; ``--max-pulls`` caps a run; a quota 429
that comes anyway stops the run's GETs at once and is reported as deferred work."""

from __future__ import annotations

import json

from test_sync_support import Env, env_fixture, manifests_of, many_library  # noqa: F401  (env_fixture: the `env` fixture)

from hubmirror.plan import Plan
from hubmirror.report import Outcome
from hubmirror.state import State
from hubmirror.sync import SyncEvents

ENTRIES = 12  # 12 entries x (index + 2 images + 2 attestations) = 60 pulls


def gets(env: Env) -> list[str]:
    return [r.ref for r in env.hub.records if r.method == "GET" and r.kind == "manifest" and r.status == 200]


def quota_429s(env: Env) -> int:
    return sum(1 for r in env.hub.records if r.status == 429)


async def test_budget_copies_what_the_quota_allows_and_the_next_run_finishes_the_rest(env: Env) -> None:
    env.commit({"pyish": "", "tiny": "", **many_library(ENTRIES)})
    env.seed()
    total = set().union(*(manifests_of(ix) for ix in env.indexes("many").values()))
    assert len(total) == 60
    env.hub.set_limit(100, remaining=20)

    plan, first = await env.sync()

    assert plan.pulls_needed == 60
    assert first.exit_code == 75
    assert quota_429s(env) == 0
    spent = gets(env)
    assert 0 < len(spent) <= 20 - 5  # the reserve of 5 is kept
    assert env.hub.remaining is not None and env.hub.remaining >= 5
    assert first.totals.manifest_gets == len(spent)
    copied = [t for i in first.by_outcome(Outcome.COPIED) for t in i.tags]
    deferred = [t for i in first.by_outcome(Outcome.DEFERRED) for t in i.tags]
    assert copied and deferred and len(copied) + len(deferred) == 2 * ENTRIES
    # newest tags first: the copied ones are the highest versions
    assert {t for t in copied if "." in t} == {f"{i}.0" for i in range(ENTRIES, ENTRIES - len(copied) // 2, -1)}
    for item in first.by_outcome(Outcome.DEFERRED):
        assert item.reason and "quota" in item.reason
    with State.open(env.state_path) as state:
        assert sorted(t for d in state.deferred() for t in d.tags) == sorted(deferred)

    env.hub.refill()
    env.hub.reset_counts()
    _, second = await env.sync()

    assert second.exit_code == 0, second.to_json()
    assert quota_429s(env) == 0
    again = gets(env)
    assert len(again) == 60 - len(spent)
    assert not set(again) & set(spent)
    assert set(again) | set(spent) == total
    for i in range(1, ENTRIES + 1):
        assert env.dest_digest("many", f"{i}.0") == env.indexes("many")[f"{i}.0"].digest
    with State.open(env.state_path) as state:
        assert state.deferred() == []


def test_a_deferred_run_exits_75_and_a_mistyped_flag_exits_2(env: Env) -> None:
    """Deferred work is EX_TEMPFAIL (75), which deployments take as success; a typo in a deployed command
    line is typer's usage error (2), which they do not."""
    env.seed()
    typo = env.cli("--max-pull", "7")
    assert typo.returncode == 2 and "No such option" in typo.stderr, typo.stderr
    assert env.hub.manifest_gets() == 0 and not env.state_path.exists()  # nothing ran

    deferred = env.cli("--max-pulls", "7")
    assert deferred.returncode == 75, deferred.stderr
    assert "exit 75" in " ".join(deferred.stderr.split())  # the summary line names it


def test_max_pulls_caps_a_run_and_reports_the_rest_as_deferred(env: Env) -> None:
    env.seed()
    report = env.root / "report.json"

    p = env.cli("--max-pulls", "7", "--report", str(report))

    assert p.returncode == 75, p.stderr
    assert 0 < env.hub.manifest_gets() <= 7
    rep = json.loads(report.read_text())
    assert rep["exit_code"] == 75
    assert rep["deferred"] and rep["successful"]
    assert rep["totals"]["manifest_gets"] <= 7
    reasons = {i["reason"] for i in rep["items"] if i["outcome"] == "deferred"}
    assert reasons and all("--max-pulls 7" in r for r in reasons)
    assert "deferred" in p.stderr
    with State.open(env.state_path) as state:
        deferred = {f"{d.source_ref.rsplit('/', 1)[1].split(':')[0]}:{t}" for d in state.deferred() for t in d.tags}
    assert deferred == {r.replace("docker.io/library/", "") for r in rep["deferred"]}

    finish = env.cli()
    assert finish.returncode == 0, finish.stderr
    with State.open(env.state_path) as state:
        assert state.deferred() == []


class ExhaustAfterPlan(SyncEvents):
    """Someone else spends the whole quota between the plan (HEADs said plenty) and the copy."""

    def __init__(self, env: Env) -> None:
        self.env = env

    def plan_ready(self, plan: Plan) -> None:
        self.env.hub.set_limit(100, remaining=0)


async def test_quota_429_that_comes_anyway_is_deferred_work_not_a_failure_storm(env: Env) -> None:
    env.seed()
    env.hub.set_limit(100, remaining=60)

    plan, report = await env.sync(ExhaustAfterPlan(env), **{"ratelimit.reserve": 0})

    assert len(plan.copies) >= 4
    assert report.exit_code == 75, report.to_json()
    assert report.by_outcome(Outcome.FAILED) == []
    # at most one per item in flight when the quota ran out (concurrency 4), then no GET at all
    assert 1 <= quota_429s(env) <= 4
    deferred = report.by_outcome(Outcome.DEFERRED)
    assert len(deferred) == len(plan.copies)
    assert any("429" in (i.reason or "") for i in deferred)
    with State.open(env.state_path) as state:
        assert len(state.deferred()) == len(plan.copies)

    env.hub.refill()
    _, again = await env.sync()
    assert again.exit_code == 0


async def test_deferred_work_for_an_image_that_left_the_selection_is_forgotten(env: Env) -> None:
    env.seed()
    _, first = await env.sync(max_pulls=1)
    assert first.exit_code == 75
    with State.open(env.state_path) as state:
        assert {d.source_ref.split(":")[0] for d in state.deferred()} >= {"docker.io/library/tiny"}

    _, second = await env.sync(images=["pyish"])  # tiny is no longer selected

    assert second.exit_code == 0, second.to_json()
    with State.open(env.state_path) as state:
        assert state.deferred() == []
