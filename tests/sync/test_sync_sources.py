"""Tag sources (issue 10): ``--repo`` / ``sources:`` over a registry's ``tags/list`` and Docker Hub's tags
API, tag policies with ``--dry-run`` explanations, immutable tags, and prune safety when a listing fails."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from test_sync_support import NAMESPACE, Env, assert_complete, skopeo, skopeo_raw

from _auth import PASSWORD, USER
from hubmirror.report import Outcome
from hubmirror.testing import images as img
from hubmirror.testing.hub import HubEmulator

#: 40 tags: releases 1.25.0–1.29.3, alpine variants, pre-releases, 2.x, moving tags.
RELEASES = [f"1.{m}.{p}" for m in range(25, 30) for p in range(4)]
ALPINE = [f"1.{m}.{p}-alpine" for m in range(27, 30) for p in range(4)]
OTHERS = ["2.0.0", "2.0.1", "1.30.0-rc1", "1.29.4-rc.1", "latest", "stable", "1.29", "1.28"]
FORTY = RELEASES + ALPINE + OTHERS
INCLUDE = r"\d+\.\d+\.\d+(-rc.*)?"


async def push_tags(target: Any, repo: str, tags: list[str], images: int = 4) -> dict[str, str]:
    """Push *tags* of *repo*, spread over a few distinct small images; tag → digest."""
    out: dict[str, str] = {}
    for i in range(images):
        mine = tags[i::images]
        if mine:
            pushed = await img.push(target, repo, img.image(f"{repo}/{i}", layers=(256,)), mine)
            out |= dict.fromkeys(mine, pushed.digest)
    return out


def test_registry_source_include_semver_keep_mirrors_exactly_the_newest_three(env: Env) -> None:
    src = env.make_registry()
    img.run_sync(push_tags(src, "team/app", FORTY))
    args = ("--repo", f"{src.host}/team/app", "--include", INCLUDE, "--semver", ">=1.27 <2", "--keep", "3")

    dry = env.cli(*args, "--dry-run", "--json")

    assert dry.returncode == 0, dry.stderr
    [source] = json.loads(dry.stdout)["sources"]
    assert source["source"] == f"{src.host}/team/app" and source["via"] == "tags/list"
    assert source["listed"] == 40
    assert source["kept"] == ["1.29.3", "1.29.2", "1.29.1"]
    policy = {d["tag"]: d["policy"] for d in source["dropped"]}
    assert len(policy) == 37
    assert {t for t, p in policy.items() if p == "include"} == set(ALPINE) | {"latest", "stable", "1.29", "1.28"}
    assert {t for t, p in policy.items() if p == "prerelease"} == {"1.30.0-rc1", "1.29.4-rc.1"}
    assert {t for t, p in policy.items() if p == "semver"} == {*RELEASES[:8], "2.0.0", "2.0.1"}
    assert {t for t, p in policy.items() if p == "keep"} == {*RELEASES[8:16], "1.29.0"}
    # the human form explains each dropped tag too
    for tag in ("1.27.0-alpine", "2.0.0", "1.30.0-rc1", "1.28.3"):
        assert f"dropped {tag}: {policy[tag]}:" in dry.stderr
    assert env.dest_tags("team/app") == []

    run = env.cli(*args, "--json")

    assert run.returncode == 0, run.stderr
    assert env.dest_tags("team/app") == ["1.29.1", "1.29.2", "1.29.3"]


@pytest.fixture
def hub_repo(env: Env) -> Iterator[dict[str, str]]:
    """`grafanaish/grafana` on the Hub emulator with 120 tags (2 pages of the tags API)."""
    tags = [f"11.{i // 10}.{i % 10}" for i in range(120)]
    yield img.run_sync(push_tags(env.hub.upstream, "grafanaish/grafana", tags, images=3))


def test_hub_source_plans_through_the_tags_api_and_falls_back_to_tags_list(env: Env, hub_repo: dict[str, str]) -> None:
    hub = env.hub
    repo = "grafanaish/grafana"

    _, first = img.run_sync(env.sync(repos=[f"docker.io/{repo}"], hub_api=hub.url))

    assert first.exit_code == 0, first.to_json()
    assert hub.tags_api_requests(repo) == 2  # 120 tags, 100 a page
    assert hub.manifest_heads(repo) == 0  # the API gave every digest: no HEAD on Docker Hub
    assert first.sources[0]["via"] == "hub-api"
    assert sorted(env.dest_tags(repo)) == sorted(hub_repo)
    assert {env.dest_digest(repo, t) for t in ("11.0.0", "11.0.1", "11.0.2")} == set(hub_repo.values())

    hub.reset_counts()
    _, again = img.run_sync(env.sync(repos=[f"docker.io/{repo}"], hub_api=hub.url))

    assert again.exit_code == 0, again.to_json()
    assert hub.tags_api_requests(repo) == 2
    assert hub.manifest_heads(repo) == 0 and hub.manifest_gets(repo) == 0  # 0 pulls for unchanged tags
    assert len(again.by_outcome(Outcome.UP_TO_DATE)) == 3

    # The API fails: tags/list and a free HEAD per tag instead, still no pull.
    hub.reset_counts()
    hub.fail_always("/v2/namespaces/", 503)
    _, fallback = img.run_sync(env.sync(repos=[f"docker.io/{repo}"], hub_api=hub.url))

    assert fallback.exit_code == 0, fallback.to_json()
    assert fallback.sources[0]["via"] == "tags/list"
    assert "tags API failed" in fallback.sources[0]["note"]
    assert hub.counts[("GET", "tag-list", repo, 200)] >= 1
    assert hub.manifest_heads(repo) == 120 and hub.manifest_gets(repo) == 0


def test_immutable_tags_are_not_asked_of_the_source_again_once_mirrored(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = env.hub
    img.run_sync(push_tags(hub.upstream, "team/tool", ["1.0.0", "1.0.1", "latest"], images=2))
    # The destination behind a second emulator, so that its requests are counted too.
    with HubEmulator(env.dest, users={USER: PASSWORD}, allow_push=True, limit=None) as dest_hub:
        monkeypatch.setenv("DEST_USER", USER)
        monkeypatch.setenv("DEST_PASSWORD", PASSWORD)
        over: dict[str, Any] = {
            "sources": [{"registry": f"{hub.host}/team/tool", "immutable": [r"\d+\.\d+\.\d+"]}],
            "dest": f"{dest_hub.host}/{NAMESPACE}",
            "credentials": {dest_hub.host: {"username_env": "DEST_USER", "password_env": "DEST_PASSWORD"}},
        }
        _, first = img.run_sync(env.sync(**over))
        assert first.exit_code == 0, first.to_json()
        assert env.dest_tags("team/tool") == ["1.0.0", "1.0.1", "latest"]
        hub.reset_counts()
        dest_hub.reset_counts()

        _, second = img.run_sync(env.sync(**over))

        assert second.exit_code == 0, second.to_json()
        sent = [(r.method, r.kind, r.ref) for r in hub.records]
        assert [s for s in sent if s[2] in ("1.0.0", "1.0.1")] == []  # the source is not asked
        assert ("HEAD", "manifest", "latest") in sent  # a moving tag is still checked
        # At the destination an immutable tag gets a HEAD (free), as any tag: a destination that lost it
        # gets it back. Nothing more.
        there = [(r.method, r.kind, r.ref) for r in dest_hub.records if r.ref in ("1.0.0", "1.0.1")]
        assert sorted(there) == [("HEAD", "manifest", "1.0.0"), ("HEAD", "manifest", "1.0.1")]
        assert {t for i in second.by_outcome(Outcome.UP_TO_DATE) for t in i.tags} == {"1.0.0", "1.0.1", "latest"}


def test_a_source_that_fails_to_list_keeps_its_tags_with_prune(env: Env) -> None:
    hub = env.hub
    img.run_sync(push_tags(hub.upstream, "team/a", ["1", "2"]))
    img.run_sync(push_tags(hub.upstream, "team/b", ["1", "2"]))
    a, b = f"{hub.host}/team/a", f"{hub.host}/team/b"
    assert env.cli("--repo", a, "--repo", b).returncode == 0
    assert env.dest_tags("team/a") == env.dest_tags("team/b") == ["1", "2"]

    hub.fail_always("/v2/team/b/tags/list", 403)
    p = env.cli("--repo", a, "--repo", b, "--exclude", "2", "--prune", "--json")

    assert p.returncode == 1, p.stderr
    report = json.loads(p.stdout)
    # b failed to list: the selection is in doubt, so prune deletes nothing at all (issue 8), b's tags included
    assert env.dest_tags("team/a") == ["1", "2"]
    assert env.dest_tags("team/b") == ["1", "2"]
    [failed] = [i for i in report["items"] if i["outcome"] == "failed" and i["source"] == b]
    assert "listing" in failed["reason"] and "nothing is pruned" in failed["reason"]
    assert "prune refused, nothing deleted" in " ".join(p.stderr.split())
    assert [s["error"] is not None for s in report["sources"]] == [False, True]
    assert "team/b" in p.stderr


@skopeo
def test_signatures_and_referrers_follow_their_images(env: Env) -> None:
    src = env.make_registry()
    repo, dest_repo = "team/signed", f"{NAMESPACE}/team/signed"
    signed = img.index("signed", ["linux/amd64", "linux/arm64/v8"])
    with_sbom = img.index("with-sbom", ["linux/amd64"])
    old = img.image("old")
    sbom = img.referrer(with_sbom, "sbom-1")
    sig, old_sig = img.cosign_signature(signed.digest), img.cosign_signature(old.digest)
    fallback = img.referrers_index([sbom])
    for thing, tags in [
        (signed, ["1.0"]),
        (with_sbom, ["2.0"]),
        (old, ["0.9"]),
        (sig, [img.cosign_tag(signed.digest)]),
        (old_sig, [img.cosign_tag(old.digest)]),
        (fallback, [with_sbom.digest.replace(":", "-")]),  # what oras writes without a referrers API
    ]:
        img.push_sync(src, repo, thing, tags)
    source = {"repos": [f"{src.host}/{repo}"], "exclude_tags": [r"0\.9"]}

    _, off = img.run_sync(env.sync(signatures=False, **source))

    assert off.exit_code == 0, off.to_json()
    assert env.dest_tags(repo) == ["1.0", "2.0"]
    assert len(off.sources[0]["artifacts"]) == 3

    _, on = img.run_sync(env.sync(**source))

    assert on.exit_code == 0, on.to_json()
    sig_tag, ref_tag = img.cosign_tag(signed.digest), with_sbom.digest.replace(":", "-")
    assert sorted(env.dest_tags(repo)) == sorted(["1.0", "2.0", sig_tag, ref_tag])  # not the excluded 0.9's
    # An independent client finds them at the destination with the source's digests and bytes.
    dest = f"docker://{env.dest.host}/{dest_repo}"
    assert skopeo_raw(f"{dest}:{sig_tag}") == sig.manifest.data
    assert skopeo_raw(f"{dest}:{ref_tag}") == fallback.manifest.data
    listed = json.loads(skopeo_raw(f"{dest}:{ref_tag}"))["manifests"]
    assert [m["digest"] for m in listed] == [sbom.digest]
    found = skopeo_raw(f"{dest}@{sbom.digest}")
    assert found == sbom.manifest.data
    assert json.loads(found)["subject"]["digest"] == with_sbom.digest == env.dest_digest("team/signed", "2.0")
    assert_complete(env.dest, dest_repo, ref_tag)
    followed = {t for i in on.by_outcome(Outcome.COPIED) for t in i.tags}
    assert followed == {sig_tag, ref_tag}

    _, again = img.run_sync(env.sync(**source))

    assert again.exit_code == 0 and again.totals.manifest_gets == 0, again.to_json()
    assert again.by_outcome(Outcome.COPIED) == []

    # A new signed image copied in this run: the source is asked for its referrers API too (Distribution
    # 2.8 has none: a 404, not a failure) and the signature comes along in the same run.
    three = img.push_sync(src, repo, img.index("three", ["linux/amd64"]), ["3.0"])
    img.push_sync(src, repo, img.cosign_signature(three.digest), [img.cosign_tag(three.digest)])

    _, new = img.run_sync(env.sync(**source))

    assert new.exit_code == 0, new.to_json()
    assert skopeo_raw(f"{dest}:{img.cosign_tag(three.digest)}") == img.cosign_signature(three.digest).manifest.data


@skopeo
def test_referrers_from_the_source_api_get_a_tag_schema_index_at_a_destination_without_one(env: Env) -> None:
    hub = env.hub
    hub.referrers_api(True)  # the source answers /v2/<repo>/referrers/<digest> and lists no sha256-* tags
    subject = img.push_sync(hub.upstream, "team/api", img.index("api-subject", ["linux/amd64"]), ["1.0"])
    sbom, sig = img.referrer(subject, "api-sbom"), img.referrer(subject, "api-sig", artifact_type="application/x-sig")
    img.push_sync(hub.upstream, "team/api", img.referrers_index([sbom, sig]), [subject.digest.replace(":", "-")])

    _, report = img.run_sync(env.sync(sources=[{"registry": f"{hub.host}/team/api"}]))

    assert report.exit_code == 0, report.to_json()
    assert report.sources[0]["artifacts"] == []
    assert hub.counts[("GET", "referrers", "team/api", 200)] == 1
    # Distribution 2.8 has no referrers API: hubmirror writes the tag-schema index there.
    ref_tag = subject.digest.replace(":", "-")
    assert env.dest_tags("team/api") == ["1.0", ref_tag]
    listed = env.dest_manifest("team/api", ref_tag)["manifests"]
    assert sorted(m["digest"] for m in listed) == sorted([sbom.digest, sig.digest])
    assert {m.get("artifactType") for m in listed} == {img.SPDX, "application/x-sig"}
    for artifact in (sbom, sig):
        assert skopeo_raw(f"docker://{env.dest.host}/{NAMESPACE}/team/api@{artifact.digest}") == artifact.manifest.data


def test_repo_of_an_official_image_mirrors_every_tag_hub_has_without_reading_the_library(env: Env) -> None:
    img.run_sync(push_tags(env.hub.upstream, "library/tinyish", ["1.0", "1", "left-the-library"], images=2))

    p = env.cli("--repo", "docker.io/library/tinyish", "--hub-api", env.hub.url, "--library", str(env.root / "none"))

    assert p.returncode == 0, p.stderr
    assert env.dest_tags("tinyish") == ["1", "1.0", "left-the-library"]
    assert env.hub.tags_api_requests("library/tinyish") == 1
    assert env.hub.manifest_heads("library/tinyish") == 0
