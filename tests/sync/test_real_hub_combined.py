"""Issue 18's closing run: one `hubmirror sync` against a source that answers as the real Docker Hub does at
its least kind, all at once: a paid account (no quota headers) answered with the abuse limit's 2026
``TOOMANYREQUESTS``, expiring CDN URLs and a CDN 502, a token server that throttles, and a tags API whose tags
move between pages while they are listed. It ends with every tag right and exit 0."""

from __future__ import annotations

import json

from test_sync_hub_manners import assert_mirrored, manifest_gets, one_line
from test_sync_support import Env

from hubmirror.testing import images as img
from hubmirror.testing.tags_api import tags_api_modes

REPO = "team/app"


def test_abuse_429s_expiring_cdn_urls_a_throttled_token_server_and_moving_tags_end_right(env: Env) -> None:
    seeded = env.seed()
    tags = [f"1.{i}.0" for i in range(6)]
    for tag in tags:
        img.push_sync(env.hub.upstream, REPO, img.image(f"{REPO}/{tag}", layers=(256,)), [tag])
    env.hub.disable_ratelimit()  # a paid account: no ratelimit-* headers
    env.hub.set_abuse_limit(6, hub_message=True)
    env.hub.abuse(3, retry_after=0.05, hub_message=True, match=manifest_gets)
    env.hub.throttle_tokens(2, retry_after=0.1)
    env.hub.expire_cdn_urls(4)
    env.hub.cdn_fail(1, 502)
    modes = tags_api_modes(env.hub)
    modes.page_size(2)  # 3 pages
    modes.move(REPO, 2)  # two tags re-pushed while the first listing pages

    p = env.cli("--images", "pyish,tiny", "--repo", f"docker.io/{REPO}", "--hub-api", env.hub.url, "--hub-rate", "0",
                "--json")  # fmt: skip

    assert p.returncode == 0, p.stderr
    one_line(p.stderr)
    rep = json.loads(p.stdout)
    assert rep["failed"] == [] and rep["deferred"] == []
    assert rep["abuse_backoffs"][env.hub.host] >= 3
    [source] = rep["sources"]
    assert sorted(source["kept"]) == tags  # each once, none missing
    assert_mirrored(env, seeded)
    assert env.dest_tags(REPO) == sorted(tags)
