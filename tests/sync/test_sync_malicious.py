"""`sync` against registries that lie or dawdle (`hubmirror.testing.malicious`).

Before it deletes anything in a repository, prune lists its tags to find what the tags that stay reference:
that list is bounded (pages, time, loops) and a broken one fails the run with one clear line naming the
registry and repository, with nothing deleted there.

A content mirror that stalls or crawls on every blob (issue 14 item 10) is given up after its stall timeout
or slow window, counted as a failure (dropped after 3), and each blob is read on from the byte reached at
the Hub (``Range``): the run ends in seconds with every tag right.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest
from test_sync_support import LIB_V2, Env, skopeo, skopeo_raw

from _auth import PASSWORD, USER
from hubmirror.digest import sha256
from hubmirror.registry.client import TAG_LIST_MAX_PAGES
from hubmirror.testing import images as img
from hubmirror.testing.malicious import MaliciousRegistry
from hubmirror.testing.official import seed_library

_HEAD = "Maintainers: Test Maintainer <test@example.invalid> (@test)\nGitRepo: https://example.invalid/{name}.git\n"
#: Two images, 64 KiB layers: at a crawl of 1 KiB/s, each layer would take a minute from the mirror.
LIB = {
    "pyish": "",
    "tiny": "",
    "duo": _HEAD.format(name="duo") + f"GitCommit: {'5' * 40}\n\nTags: 1.0, latest\nArchitectures: amd64, arm64v8\n"
    "Directory: 1\n",
    "uno": _HEAD.format(name="uno") + f"GitCommit: {'6' * 40}\n\nTags: 2.0, 2\nArchitectures: amd64\nDirectory: 2\n",
}
LAYER = 64 * 1024


@pytest.mark.parametrize("fault", ["chain", "loop"])
def test_prune_stops_on_an_endless_or_looping_tag_list(env: Env, fault: str) -> None:
    with MaliciousRegistry(env.dest, users={USER: PASSWORD}, allow_push=True) as dest:
        port = dest.host.rsplit(":", 1)[1]
        creds = {f"HUBMIRROR_127_0_0_1_{port}_USERNAME": USER, f"HUBMIRROR_127_0_0_1_{port}_PASSWORD": PASSWORD}

        def sync(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                env.cli_args(*args, dest=f"{dest.host}/mirror"),
                capture_output=True,
                text=True,
                env=env.cli_env(creds),
                timeout=300,
                check=False,
            )

        env.seed()
        first = sync()
        assert first.returncode == 0, first.stderr
        before = set(env.dest_tags("pyish"))
        env.commit(LIB_V2)
        env.seed(repos=["tiny"])
        dest.tag_fault("mirror/pyish", fault)  # type: ignore[arg-type]

        proc = sync("--prune", "--max-delete", "10")  # 4 of 12 tags leave: more than the default 10 %

        assert proc.returncode == 1, (proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr
        reason = "did not end within" if fault == "chain" else "loops"
        lines = proc.stderr.splitlines()
        assert any(f"{dest.host}/mirror/pyish: tag list" in line and reason in line for line in lines)
        assert dest.tag_list_pages("mirror/pyish") <= 2 * TAG_LIST_MAX_PAGES + 2
        assert set(env.dest_tags("pyish")) == before  # nothing deleted


@skopeo
@pytest.mark.parametrize("fault", ["stall", "crawl"])
def test_a_stalling_or_crawling_mirror_is_given_up_and_each_blob_read_on_from_the_hub(env: Env, fault: str) -> None:
    env.commit(LIB)
    seeded = env.seed(layer_size=LAYER)
    upstream = env.make_registry()
    img.run_sync(seed_library(upstream, env.library(), layer_size=LAYER))
    env.hub.reset_counts()
    report = env.root / "report.json"
    with MaliciousRegistry(upstream) as mirror:
        mirror.all_blobs_fault(fault)  # type: ignore[arg-type]
        mirror.set_crawl_speed(1024)  # "crawl": 1 KiB/s; "stall": half of each blob, then silence
        started = time.monotonic()

        p = env.cli("--content-mirror", f"{mirror.host},stall_timeout=1", "--report", str(report), timeout=120)

        elapsed = time.monotonic() - started
    assert p.returncode == 0, p.stderr
    assert elapsed < 60, elapsed  # not 120 s per blob (a stall) nor a minute per layer (a crawl)
    [entry] = [s for s in json.loads(report.read_text())["content_sources"] if s["name"] == mirror.host]
    assert entry["dropped"] is not None and "3 failures" in entry["dropped"], entry
    assert entry["interrupted"] >= 3 and entry["bytes"] > 0, entry
    word = "crawling at" if fault == "crawl" else "stalled (1s without a byte)"
    assert word in entry["dropped"] and f"content mirror {mirror.host} was dropped" in p.stderr
    # The blobs given up were read on from the byte reached, with Range (the CDN answered 206).
    assert len([r for r in env.hub.cdn_records if r.status == 206]) >= 3
    for key, digest in seeded.items():
        name, tag = key.split(":")
        assert sha256(skopeo_raw(f"docker://{env.dest.host}/mirror/{name}:{tag}")) == digest, key
