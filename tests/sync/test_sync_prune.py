"""A new library commit that adds and removes tags: only what changed is fetched; ``--prune`` deletes the
tags hubmirror created that left (Distribution 2.8 deletes by digest only: a tag sharing its digest with
a tag that stays is moved onto a placeholder that is deleted, so the content stays), and tags hubmirror did
not create are never touched."""

from __future__ import annotations

import json

from test_sync_support import LIB_V2, NAMESPACE, Env, assert_complete, list_tags, manifests_of

from hubmirror.report import Outcome
from hubmirror.state import State
from hubmirror.testing import images as img

SLIM = ["3-slim", "3.14-slim", "slim"]


async def first_sync(env: Env) -> dict[str, str]:
    seeded = env.seed()
    _, report = await env.sync()
    assert report.exit_code == 0, report.to_json()
    return seeded


async def test_new_commit_fetches_only_added_groups_and_keeps_removed_tags_without_prune(env: Env) -> None:
    await first_sync(env)
    env.commit(LIB_V2)
    seeded = env.seed(repos=["tiny"])
    env.hub.reset_counts()

    plan, report = await env.sync()

    assert plan.diff is not None
    assert report.exit_code == 0, report.to_json()
    # Only the new 2.0 group is fetched: its index, 2 images, 2 attestations.
    new = env.indexes("tiny")["2.0"]
    gets = sorted(r.ref for r in env.hub.records if r.method == "GET" and r.kind == "manifest")
    assert gets == sorted(manifests_of(new))
    assert env.dest_digest("tiny", "2") == env.dest_digest("tiny", "2.0") == seeded["tiny:2.0"]
    # Without --prune the tags that left stay, and the report says so.
    for tag in SLIM:
        assert env.dest_digest("pyish", tag) is not None
    assert env.dest_digest("tiny", "old") is not None
    kept = {t for i in report.by_outcome(Outcome.KEPT) for t in i.tags}
    assert kept == {*SLIM, "old"}
    assert all("--prune" in (i.reason or "") for i in report.by_outcome(Outcome.KEPT))
    assert report.by_outcome(Outcome.PRUNED) == []


def test_prune_deletes_removed_tags_and_only_the_tag_when_a_kept_tag_shares_its_digest(env: Env) -> None:
    env.seed()
    assert env.cli().returncode == 0
    env.commit(LIB_V2)
    seeded = env.seed(repos=["tiny"])

    p = env.cli("--prune", "--max-delete", "4", "--json")  # 4 of 12 tags: more than the default 10 %

    assert p.returncode == 0, p.stderr
    # The slim group left entirely: deleted (by digest on Distribution 2.8: nothing that stays reaches it).
    assert set(env.dest_tags("pyish")) & set(SLIM) == set()
    assert env.dest_digest("pyish", "3.14-trixie") is not None
    # `old` left while 1.0/1/latest stay on the same digest: Distribution 2.8 cannot delete a tag alone, so
    # `old` was moved onto a placeholder that was deleted; the digest and the tags on it stay.
    assert "old" not in env.dest_tags("tiny")
    assert {"1.0", "1", "latest", "2.0", "2"} == set(env.dest_tags("tiny"))
    assert env.dest_digest("tiny", "1.0") == seeded["tiny:1.0"]
    assert_complete(env.dest, f"{NAMESPACE}/tiny", "1.0")
    rep = json.loads(p.stdout)
    assert [i for i in rep["items"] if i["outcome"] == "kept"] == []
    pruned = {t: i["reason"] for i in rep["items"] if i["outcome"] == "pruned" for t in i["tags"]}
    assert sorted(pruned) == sorted([*SLIM, "old"])
    assert "placeholder" in pruned["old"] and "1.0" in pruned["old"]
    with State.open(env.state_path) as state:
        assert all(state.tag(env.key("pyish"), t) is None for t in SLIM)
        assert state.tag(env.key("tiny"), "old") is None
        assert {d.how for d in state.deletions()} == {"digest", "placeholder"}


async def test_prune_never_deletes_tags_hubmirror_did_not_create(env: Env) -> None:
    seeded = env.seed()
    # Before the first sync someone put the right content under 3-slim themselves, plus a tag of their own.
    slim = env.indexes("pyish")["3-slim"]
    own = img.index("someone-else", ["linux/amd64"])
    await img.push(env.dest, f"{NAMESPACE}/pyish", slim, ["3-slim"])
    await img.push(env.dest, f"{NAMESPACE}/pyish", own, ["custom"])
    _, first = await env.sync()
    assert first.exit_code == 0
    with State.open(env.state_path) as state:
        rec = state.tag(env.key("pyish"), "3-slim")
        assert rec is not None and not rec.created_by_hubmirror
        assert state.tag(env.key("pyish"), "custom") is None

    env.commit(LIB_V2)
    env.seed(repos=["tiny"])
    _, report = await env.sync(prune=True, max_delete=3)

    assert report.exit_code == 0, report.to_json()
    # 3-slim was not created by hubmirror: it stays. 3.14-slim and slim (same digest) go, but not the digest:
    # a delete by digest would remove 3-slim too, so each is moved onto a placeholder, which is deleted.
    assert env.dest_digest("pyish", "3-slim") == seeded["pyish:3-slim"]
    assert_complete(env.dest, f"{NAMESPACE}/pyish", "3-slim")
    assert env.dest_digest("pyish", "custom") == own.digest
    pruned = {t: i.reason for i in report.by_outcome(Outcome.PRUNED) for t in i.tags}
    assert {"3.14-slim", "slim"} <= set(pruned)
    assert all("3-slim" in (pruned[t] or "") for t in ("3.14-slim", "slim"))
    assert env.dest_digest("pyish", "3.14-slim") is None and env.dest_digest("pyish", "slim") is None
    assert "3-slim" not in {t for i in report.by_outcome(Outcome.PRUNED) for t in i.tags}


async def test_prune_only_touches_its_own_namespace(env: Env) -> None:
    env.seed()
    # A second mirror namespace on the same registry, kept in the same state file.
    _, other = await env.sync(dest=f"{env.dest.host}/elsewhere", images=["tiny"])
    assert other.exit_code == 0, other.to_json()
    before = list_tags(env.dest, "elsewhere/tiny")
    assert before

    _, report = await env.sync(images=["pyish"], prune=True)

    assert report.exit_code == 0, report.to_json()
    assert report.by_outcome(Outcome.PRUNED) == [] and report.by_outcome(Outcome.KEPT) == []
    assert list_tags(env.dest, "elsewhere/tiny") == before
