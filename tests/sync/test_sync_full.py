"""``hubmirror sync`` from the Hub emulator: a full first run, a no-op second run, a rebuilt image caught
by a free HEAD, and a SharedTag with a Windows entry written as a Linux-only index."""

from __future__ import annotations

import json

from test_sync_support import (
    Env,
    blob_files,
    manifests_of,
    skopeo,
    skopeo_raw,
)

from hubmirror.digest import sha256
from hubmirror.report import Outcome
from hubmirror.state import State

LINUX_TAGS = {
    "pyish": ["3", "3-slim", "3-trixie", "3.14", "3.14-slim", "3.14-trixie", "latest", "slim"],
    "tiny": ["1", "1.0", "latest", "old"],
}


def expected_gets(env: Env) -> set[str]:
    """Every distinct manifest a full sync of LIB_V1 must fetch (Windows content left out)."""
    out: set[str] = set()
    for repo, tags in LINUX_TAGS.items():
        ix = env.indexes(repo)
        for tag in tags:
            out |= manifests_of(ix[tag])
    return out


async def test_full_sync_copies_every_selected_tag_with_the_source_digest(env: Env) -> None:
    seeded = env.seed()
    _, report = await env.sync()

    assert report.exit_code == 0, report.to_json()
    for repo, tags in LINUX_TAGS.items():
        assert env.dest_tags(repo) == sorted(tags)
        for tag in tags:
            if (repo, tag) in {("pyish", "3.14"), ("pyish", "3"), ("pyish", "latest")}:
                continue  # the SharedTag with a Windows entry is filtered (next test)
            assert env.dest_digest(repo, tag) == seeded[f"{repo}:{tag}"], f"{repo}:{tag}"
    # The Windows-only tags are not selected by default.
    assert "3.14-windowsservercore" not in env.dest_tags("pyish")
    # Tags that share a manifest were fetched once: one GET per distinct manifest, nothing twice.
    gets = [r.ref for r in env.hub.records if r.method == "GET" and r.kind == "manifest"]
    assert len(gets) == len(set(gets)), sorted(gets)
    assert env.hub.manifest_gets() == len(expected_gets(env))
    assert set(gets) == expected_gets(env)
    assert report.totals.manifest_gets == env.hub.manifest_gets()
    copied = report.by_outcome(Outcome.COPIED)
    assert sorted(tag for i in copied for tag in i.tags) == sorted(f for tags in LINUX_TAGS.values() for f in tags)


@skopeo
async def test_skopeo_reads_the_mirrored_tags_with_the_source_digest(env: Env) -> None:
    seeded = env.seed()
    _, report = await env.sync()
    assert report.exit_code == 0
    for repo, tag in [("tiny", "latest"), ("pyish", "3.14-slim"), ("pyish", "3-trixie")]:
        raw = skopeo_raw(f"docker://{env.dest_prefix}/{repo}:{tag}")
        assert sha256(raw) == seeded[f"{repo}:{tag}"]


async def test_shared_tag_index_whose_children_are_present_costs_one_pull(env: Env) -> None:
    seeded = env.seed()
    _, first = await env.sync(include_tags=["3.14-trixie"])
    assert first.exit_code == 0
    assert env.hub.manifest_gets() == 5  # the entry's index, 2 images, 2 attestations
    env.hub.reset_counts()

    _, second = await env.sync(include_tags=["3.14-trixie", "3.14"])
    assert second.exit_code == 0
    assert env.hub.manifest_gets() == 1
    [item] = second.by_outcome(Outcome.COPIED)
    assert item.tags == ["3.14"] and item.pulls == 1
    assert [r.ref for r in env.hub.records if r.method == "GET" and r.kind == "manifest"] == [seeded["pyish:3.14"]]


async def test_shared_tag_with_a_windows_entry_is_a_linux_only_index_and_state_keeps_upstream(env: Env) -> None:
    seeded = env.seed()
    upstream = env.indexes("pyish")["latest"]
    assert {i.platform.os for i in upstream.images} == {"linux", "windows"}  # what Hub serves

    _, report = await env.sync()
    assert report.exit_code == 0

    dest = env.dest_digest("pyish", "latest")
    assert dest is not None and dest != seeded["pyish:latest"]
    assert env.dest_digest("pyish", "3.14") == env.dest_digest("pyish", "3") == dest
    index = env.dest_manifest("pyish", "latest")
    platforms = [(c.get("platform") or {}).get("os") for c in index["manifests"]]
    assert "windows" not in platforms and "linux" in platforms
    # every kept child is a Linux image or the attestation of one, and the registry holds it
    linux = {i.digest for i in upstream.images if i.platform.os == "linux"}
    assert {c["digest"] for c in index["manifests"]} == manifests_of(upstream) - {upstream.digest}
    assert linux <= {c["digest"] for c in index["manifests"]}
    for child in index["manifests"]:
        assert env.dest_manifest("pyish", child["digest"])["schemaVersion"] == 2

    with State.open(env.state_path) as state:
        rec = state.tag(env.key("pyish"), "latest")
        assert rec is not None
        assert rec.upstream_digest == seeded["pyish:latest"]
        assert rec.dest_digest == dest


async def test_second_run_with_nothing_changed_spends_no_pulls_and_uploads_nothing(env: Env) -> None:
    env.seed()
    _, first = await env.sync()
    assert first.exit_code == 0
    stored = blob_files(env.dest)
    env.hub.reset_counts()

    _, second = await env.sync()

    assert second.exit_code == 0
    assert env.hub.manifest_gets() == 0
    assert env.hub.blob_gets() == 0
    assert second.totals.manifest_gets == 0 and second.totals.blobs_copied == 0 and second.totals.bytes == 0
    assert blob_files(env.dest) == stored
    assert second.by_outcome(Outcome.COPIED) == [] and second.by_outcome(Outcome.RETAGGED) == []
    up = sorted(t for i in second.by_outcome(Outcome.UP_TO_DATE) for t in i.tags)
    assert up == sorted(t for tags in [*LINUX_TAGS.values()] for t in tags)


def test_second_cli_run_exits_0_with_no_pulls(env: Env) -> None:
    env.seed()
    first = env.cli("--json")
    assert first.returncode == 0, first.stderr
    env.hub.reset_counts()

    second = env.cli("--json")

    assert second.returncode == 0, second.stderr
    assert env.hub.manifest_gets() == 0
    rep = json.loads(second.stdout)
    assert rep["exit_code"] == 0 and rep["totals"]["manifest_gets"] == 0 and rep["totals"]["blobs_copied"] == 0
    assert "0 pulls" in second.stderr


async def test_image_rebuilt_under_the_same_tag_is_recopied_for_its_new_manifests_only(env: Env) -> None:
    env.seed()
    _, first = await env.sync()
    assert first.exit_code == 0
    old = env.indexes("pyish")
    new = env.indexes("pyish", {"3.14-trixie": 1})
    rebuilt = env.seed(repos=["pyish"], generation={"pyish": {"3.14-trixie": 1}})
    env.hub.reset_counts()

    _, second = await env.sync()

    assert second.exit_code == 0
    # The trixie entry and the SharedTag index that combines it changed; the slim entry did not.
    assert env.dest_digest("pyish", "3-trixie") == rebuilt["pyish:3-trixie"] != old["3-trixie"].digest
    assert env.dest_digest("pyish", "3.14-slim") == old["3.14-slim"].digest
    new_manifests = (manifests_of(new["3-trixie"]) | manifests_of(new["latest"])) - (
        manifests_of(old["3-trixie"]) | manifests_of(old["latest"])
    )
    gets = [r.ref for r in env.hub.records if r.method == "GET" and r.kind == "manifest"]
    assert sorted(gets) == sorted(new_manifests)
    copied = {tuple(i.tags): i for i in second.by_outcome(Outcome.COPIED)}
    assert set(copied) == {("3.14-trixie", "3-trixie"), ("3.14", "3", "latest")}
    assert all(i.reason == "rebuilt" for i in copied.values())
    assert copied[("3.14-trixie", "3-trixie")].previous_digest == old["3-trixie"].digest
    assert env.dest_manifest("pyish", "latest")["annotations"]["io.hubmirror.source.digest"] == rebuilt["pyish:latest"]
