"""Docker Hub's tags API when it is busy (issue 18 item 5; reference §C.6, §F.4), from the command line: its
own rate limit (429 with the time to come back) is waited out, a fallback to ``tags/list`` is said aloud
and ``keep_by: pushed`` is refused without push times, and tags re-pushed while the pages are read are
listed once each, every one of them (`hubmirror.testing.tags_api` modes of the Hub emulator)."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_sync_support import Env

from hubmirror.sources import HubTagsAPI
from hubmirror.testing import images as img
from hubmirror.testing.tags_api import tags_api_modes

REPO = "team/app"
#: Version order and push order disagree: by push time the newest two are 0.9.0 and 1.0.0.
PUSH_ORDER = ["1.1.0", "2.0.0", "1.0.0", "0.9.0"]  # oldest push first


@pytest.fixture
def app(env: Env) -> dict[str, str]:
    """team/app on the Hub emulator with four tags pushed in `PUSH_ORDER` (one minute apart)."""
    digests: dict[str, str] = {}
    for i, tag in enumerate(PUSH_ORDER):
        pushed = img.push_sync(env.hub.upstream, REPO, img.image(f"{REPO}/{tag}", layers=(256,)), [tag])
        digests[tag] = pushed.digest
        env.hub.set_pushed(REPO, tag, datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=i))
    return digests


def config(env: Env, **source: Any) -> Path:
    path = env.root / "hubmirror.yaml"
    path.write_text(yaml.safe_dump({"hub_api": env.hub.url, "sources": [{"hub": REPO, "keep": 2, **source}]}))
    return path


def test_a_tags_api_answering_429_is_waited_out_and_keep_goes_by_push_time(env: Env, app: dict[str, str]) -> None:
    modes = tags_api_modes(env.hub)
    modes.throttle(2, retry_in=1.0)  # X-Retry-After: a Unix time about a second ahead
    report = env.root / "report.json"

    p = env.cli("--config", str(config(env)), "--report", str(report))

    assert p.returncode == 0, p.stderr
    assert env.dest_tags(REPO) == ["0.9.0", "1.0.0"]  # the newest two by push time, not by version
    [source] = json.loads(report.read_text())["sources"]
    assert source["via"] == "hub-api" and source["note"] is None
    log = modes.throttle_log
    assert [r.retry_at is not None for r in log[:3]] == [True, True, False]
    for answered, came_back in itertools.pairwise(log[:3]):
        assert answered.retry_at is not None
        assert came_back.at >= answered.retry_at - 0.01  # not before the Unix time it was given


def test_a_tags_api_that_stays_rate_limited_falls_back_says_so_and_refuses_keep_by_pushed(
    env: Env, app: dict[str, str]
) -> None:
    tags_api_modes(env.hub).throttle(None, retry_in=0.2, header="retry-after-unix")  # as observed in 2025
    report = env.root / "report.json"

    p = env.cli("--config", str(config(env)), "--report", str(report))

    assert p.returncode == 0, p.stderr
    [source] = json.loads(report.read_text())["sources"]
    assert source["via"] == "tags/list"
    assert "rate limited (HTTP 429" in source["note"] and "without push times" in source["note"]
    assert "rate limited" in p.stderr and "without push times" in p.stderr
    assert env.dest_tags(REPO) == ["1.1.0", "2.0.0"]  # without push times: the newest two by version, said so

    refused = env.cli("--config", str(config(env, keep_by="pushed")), "--prune", "--json")

    assert refused.returncode == 1, refused.stderr
    assert "Traceback" not in refused.stderr
    out = json.loads(refused.stdout)
    [source] = out["sources"]
    assert "keep_by: pushed needs each tag's push time" in source["error"] and "rate limited" in source["error"]
    [failed] = [i for i in out["items"] if i["outcome"] == "failed" and i["source"].endswith(REPO)]
    assert failed["reason"].startswith(source["error"]) and "nothing is pruned" in failed["reason"]
    assert "keep_by: pushed needs each tag's push time" in refused.stderr
    assert env.dest_tags(REPO) == ["1.1.0", "2.0.0"]  # nothing copied by another order, nothing pruned


def test_a_registry_source_with_keep_by_pushed_is_a_config_error(env: Env) -> None:
    path = env.root / "hubmirror.yaml"
    path.write_text(
        yaml.safe_dump({"sources": [{"registry": f"{env.hub.host}/{REPO}", "keep": 2, "keep_by": "pushed"}]})
    )

    p = env.cli("--config", str(path))

    assert p.returncode == 1, p.stderr
    assert "keep_by: pushed needs push times" in p.stderr and "Traceback" not in p.stderr


def test_tags_moving_between_pages_while_listed_are_listed_once_each_and_all(env: Env) -> None:
    tags = [f"1.{i}.0" for i in range(7)]
    img.run_sync(_push(env, tags))
    modes = tags_api_modes(env.hub)
    modes.page_size(2)  # 4 pages
    modes.move(REPO, 2)  # two tags re-pushed while the first listing pages

    dry = env.cli("--repo", f"docker.io/{REPO}", "--hub-api", env.hub.url, "--dry-run", "--json")

    assert dry.returncode == 0, dry.stderr
    [source] = json.loads(dry.stdout)["sources"]
    assert source["via"] == "hub-api" and source["listed"] == 7
    assert sorted(source["kept"]) == tags  # each once, none missing
    assert "moved between pages" in source["note"]
    assert env.hub.tags_api_requests(REPO) == 8  # listed twice: the second listing agrees with `count`

    run = env.cli("--repo", f"docker.io/{REPO}", "--hub-api", env.hub.url)

    assert run.returncode == 0, run.stderr
    assert env.dest_tags(REPO) == sorted(tags)


async def test_tags_that_keep_moving_are_all_used_after_the_last_listing(env: Env) -> None:
    tags = [f"2.{i}.0" for i in range(7)]
    await _push(env, tags)
    modes = tags_api_modes(env.hub)
    modes.page_size(2)
    modes.move(REPO, None)  # a tag moves on every page, in every listing

    api = HubTagsAPI(env.hub.url)
    try:
        listed = await api.tags(*REPO.split("/"))
    finally:
        await api.close()

    assert sorted(t.name for t in listed.tags) == tags
    assert listed.note is not None and "each of 3 listings" in listed.note
    assert api.requests == 12  # 3 listings of 4 pages, then no more


async def _push(env: Env, tags: list[str]) -> None:
    for tag in tags:
        await img.push(env.hub.upstream, REPO, img.image(f"{REPO}/{tag}", layers=(256,)), [tag])
