"""Signatures follow library (``--images``) and image-list (``--list``) images too, not only tag sources':
cosign tags of their digests are copied from the Hub emulator, recorded as created by hubmirror, kept while
their image is selected, and pruned with it."""

from __future__ import annotations

import json
from pathlib import Path

from test_sync_support import NAMESPACE, Env, env_fixture, get_manifest  # noqa: F401  (env_fixture: `env`)

from hubmirror.state import State
from hubmirror.testing import images as img


def test_signatures_follow_library_and_list_images_and_are_pruned_with_them(env: Env, tmp_path: Path) -> None:
    hub = env.hub
    tiny = env.seed(repos=["tiny"])["tiny:1.0"]
    sig = img.cosign_signature(tiny, reference="docker.io/library/tiny")
    img.push_sync(hub.upstream, "library/tiny", sig, [img.cosign_tag(tiny)])
    app = img.push_sync(hub.upstream, "team/app", img.index("app", ["linux/amd64", "linux/arm64/v8"]), ["1.0"])
    att = img.cosign_signature(app.digest, "app-att", reference="docker.io/team/app")
    img.push_sync(hub.upstream, "team/app", att, [img.cosign_tag(app.digest, "att")])
    images = tmp_path / "images.txt"
    images.write_text("docker.io/team/app:1.0\n")
    sig_tag, att_tag = img.cosign_tag(tiny), img.cosign_tag(app.digest, "att")

    p = env.cli("--job", "sigs", "--images", "tiny", "--list", str(images), "--json")

    assert p.returncode == 0, p.stderr
    assert sig_tag in env.dest_tags("tiny") and env.dest_tags("team/app") == sorted(["1.0", att_tag])
    assert get_manifest(env.dest, f"{NAMESPACE}/tiny", sig_tag) == sig.manifest.data  # the source's bytes
    assert get_manifest(env.dest, f"{NAMESPACE}/team/app", att_tag) == att.manifest.data
    copied = {t for i in json.loads(p.stdout)["items"] if i["outcome"] == "copied" for t in i["tags"]}
    assert {sig_tag, att_tag} <= copied
    with State.open(env.state_path) as state:
        for repo, tag in (("tiny", sig_tag), ("team/app", att_tag)):
            rec = state.tag(env.key(repo), tag)
            assert rec is not None and rec.created_by_hubmirror, (repo, tag)

    # While their images stay selected, prune keeps them; nothing is fetched again.
    again = env.cli("--job", "sigs", "--images", "tiny", "--list", str(images), "--prune", "--json")

    assert again.returncode == 0, again.stderr
    rep = json.loads(again.stdout)
    assert rep["counts"]["pruned"] == 0 and rep["counts"]["copied"] == 0 and rep["totals"]["manifest_gets"] == 0
    assert sig_tag in env.dest_tags("tiny") and att_tag in env.dest_tags("team/app")

    # team/app leaves the selection: its tag and its signature go together; tiny's signature stays.
    gone = env.cli("--job", "sigs", "--images", "tiny", "--prune", "--max-delete", "2", "--json")

    assert gone.returncode == 0, gone.stderr
    pruned = {t for i in json.loads(gone.stdout)["items"] if i["outcome"] == "pruned" for t in i["tags"]}
    assert pruned == {"1.0", att_tag}
    assert env.dest_tags("team/app") == [] and sig_tag in env.dest_tags("tiny")
