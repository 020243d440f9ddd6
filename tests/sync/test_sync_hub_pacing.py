"""Docker Hub's abuse limit (every request counts, HEADs too): requests to the Hub source are paced at
``--hub-rate``, and a 429 of the abuse limit is backed off and retried, never taken for the pull quota
(which defers work): told apart by ``ratelimit-remaining`` and ``Retry-After``, and counted apart (report
``abuse_backoffs``, metric ``hubmirror_abuse_backoffs_total``) so an operator sees the pace is too fast."""

from __future__ import annotations

import json
from pathlib import Path

from test_sync_support import Env, env_fixture  # noqa: F401  (env_fixture: the `env` fixture)

from hubmirror.plan import Plan
from hubmirror.report import Outcome
from hubmirror.sync import SyncEvents


def hub_requests(env: Env) -> list[float]:
    """Arrival times of the requests the Hub port answered (token requests go to the auth service)."""
    return sorted(r.at for r in env.hub.records if r.kind != "token")


def test_requests_to_the_hub_source_are_paced_at_hub_rate(env: Env) -> None:
    env.seed()

    p = env.cli("--hub-rate", "10")

    assert p.returncode == 0, p.stderr
    times = hub_requests(env)
    assert len(times) > 40
    # 10 a second after a burst of 2 seconds' worth: they cannot have arrived faster than that (a loaded
    # machine only makes it slower).
    assert times[-1] - times[0] >= (len(times) - 1 - 20) / 10 * 0.9


class AbuseAfterPlan(SyncEvents):
    """The Hub's abuse limit strikes as the copies start: 429s that look like the quota's (code
    TOOMANYREQUESTS) but carry a Retry-After and quota headers saying pulls are left."""

    def __init__(self, env: Env) -> None:
        self.env = env

    def plan_ready(self, plan: Plan) -> None:
        self.env.hub.abuse(3, retry_after=0.2, like_quota=True)


async def test_an_abuse_429_is_backed_off_and_retried_not_taken_for_the_quota(env: Env) -> None:
    env.seed()

    plan, report = await env.sync(AbuseAfterPlan(env))

    assert plan.copies
    assert sum(1 for r in env.hub.records if r.status == 429) == 3
    assert report.exit_code == 0, report.to_json()
    assert report.abuse_backoffs[env.hub.host] == report.totals.abuse_backoffs == 3  # counted apart from quota
    assert report.by_outcome(Outcome.DEFERRED) == []


def test_an_unpaced_sync_that_runs_into_the_abuse_limit_backs_off_finishes_and_counts_them(
    env: Env, tmp_path: Path
) -> None:
    env.seed()
    # 3 requests a second, then bare 429s: the check's 4 concurrent HEADs alone run into it.
    env.hub.set_abuse_limit(3, retry_after=0.2)
    prom = tmp_path / "hubmirror.prom"

    p = env.cli("--images", "tiny", "--hub-rate", "0", "--json", "--metrics-file", str(prom))

    assert p.returncode == 0, p.stderr
    assert "deferred 0" in p.stderr
    # Every abuse 429 the Hub sent is counted, apart from the quota, in the report, its summary line and
    # the metrics, per registry (the destination sent none).
    abuse = sum(1 for r in env.hub.records if r.status == 429)
    assert abuse > 0
    rep = json.loads(p.stdout)
    assert rep["abuse_backoffs"] == {env.hub.host: abuse, env.dest.host: 0}
    assert rep["totals"]["abuse_backoffs"] == abuse
    assert f"{abuse} abuse-limit 429s backed off" in " ".join(p.stderr.split())
    metrics = prom.read_text()
    assert f'hubmirror_abuse_backoffs_total{{registry="{env.hub.host}"}} {float(abuse)}' in metrics
    assert f'hubmirror_abuse_backoffs_total{{registry="{env.dest.host}"}} 0.0' in metrics
