"""Never lose or take what isn't ours (issue 8, findings 1–4), reproduced from the command line:

* a library file with a syntax error, or a selection term that matches nothing, makes ``sync --prune``
  refuse (exit 1, nothing deleted) and keeps the commit from being recorded as synced;
* prune refuses to delete more than ``--max-delete`` tags (default 10 % of the tags hubmirror manages),
  and ``--dry-run --prune`` predicts that refusal (same exit code and report);
* a destination tag hubmirror did not write, holding other content, is a conflict: left as it is, exit 1,
  never pruned later, replaced only with ``--overwrite``;
* a change of the platform selection copies the tag again, fetching only the manifests it lacks;
* the state's SQLite calls run off the event loop.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from typing import Any

import pytest
from test_sync_support import _HEAD, NAMESPACE, Env

from hubmirror.media import ATTESTATION_REF_DIGEST
from hubmirror.state import State
from hubmirror.testing import images as img

ALPHA = (
    _HEAD.format(name="alpha")
    + """GitCommit: 4444444444444444444444444444444444444444

Tags: 1.0, 1, latest
Architectures: amd64, arm64v8
Directory: 1

Tags: 0.9, 0
Architectures: amd64, arm64v8
Directory: 0
"""
)
BETA = ALPHA.replace("alpha", "beta").replace("4" * 40, "5" * 40)
ALPHA_TAGS = ["0", "0.9", "1", "1.0", "latest"]
#: Line 6 of library/alpha: the `Architectures` line of its first entry, with the colon missing.
BROKEN_ALPHA = ALPHA.replace("Architectures: amd64, arm64v8", "Architectures amd64 arm64v8 !!!", 1)


def alpha_and_beta(env: Env) -> tuple[str, dict[str, str]]:
    """Replace the fixture's library by alpha and beta, seed the Hub, sync both as the job `mirror` (whose
    --images then change): (commit, seeded digests)."""
    commit = env.commit({"alpha": ALPHA, "beta": BETA, "pyish": None, "tiny": None})  # type: ignore[dict-item]
    seeded = env.seed()
    p = env.cli("--job", "mirror", "--images", "alpha,beta")
    assert p.returncode == 0, p.stderr
    assert env.dest_tags("alpha") == env.dest_tags("beta") == ALPHA_TAGS
    return commit, seeded


def synced_commit(env: Env) -> str | None:
    with State.open(env.state_path) as state:
        return state.library_commit(str(env.library_repo))


def one_line(text: str) -> str:
    return " ".join(text.split())


# ------------------------------------------------------------------------------------------ finding 1


def test_broken_library_file_with_prune_deletes_nothing_and_the_commit_is_not_recorded(env: Env) -> None:
    first, _ = alpha_and_beta(env)
    env.commit({"alpha": BROKEN_ALPHA})

    # --max-delete 100: only the broken file stands in the way (alpha's 5 of 10 tags exceed the default).
    p = env.cli("--prune", "--max-delete", "100", "--json")

    assert p.returncode == 1, p.stderr
    assert env.dest_tags("alpha") == env.dest_tags("beta") == ALPHA_TAGS
    out = one_line(p.stderr)
    assert "library/alpha" in out and "line 6" in out and "has no ':'" in out
    assert "refused, nothing deleted" in out
    rep = json.loads(p.stdout)
    assert rep["counts"]["pruned"] == 0
    assert {i["source"] for i in rep["items"] if i["outcome"] == "failed"} == {"library/alpha", "--prune"}
    assert synced_commit(env) == first

    # Without --prune the parse error still fails the run (exit 1), and the commit is still not synced.
    again = env.cli()
    assert again.returncode == 1 and "library/alpha" in one_line(again.stderr)
    assert synced_commit(env) == first


# ------------------------------------------------------------------------------------------ finding 2


def test_a_typo_in_images_with_prune_deletes_nothing(env: Env) -> None:
    alpha_and_beta(env)

    p = env.cli("--images", "alpah", "--prune")

    assert p.returncode == 1, p.stderr
    out = one_line(p.stderr)
    assert "error: --images alpah: matches no repository" in p.stderr and "did you mean alpha?" in out
    assert "error: prune refused, nothing deleted: --images alpah" in p.stderr
    # A dry run says so too.
    dry = env.cli("--images", "alpah", "--prune", "--dry-run")
    assert dry.returncode == 1
    assert "--prune: a real run would refuse, nothing would be deleted: --images alpah" in one_line(dry.stderr)
    # Also when --max-delete would allow it: the typo alone stops prune.
    p = env.cli("--images", "alpah", "--prune", "--max-delete", "100")
    assert p.returncode == 1 and "--images alpah" in one_line(p.stderr)
    assert env.dest_tags("alpha") == env.dest_tags("beta") == ALPHA_TAGS


def test_selection_terms_that_match_nothing_are_errors_without_prune(env: Env) -> None:
    p = env.cli("--images", "zzz*")
    assert p.returncode == 1, p.stderr
    assert "error: --images zzz*: matches no repository of the library at" in p.stderr.splitlines()[-1]
    assert "Traceback" not in p.stderr

    p = env.cli("--images", "tiny", "--include", r"9\..*")
    assert p.returncode == 1, p.stderr
    assert r"error: --include 9\..*: matches no tag of the selected repositories" in p.stderr.splitlines()[-1]


# ------------------------------------------------------------------------------------------ max-delete


def test_prune_refuses_to_delete_more_than_max_delete(env: Env) -> None:
    alpha_and_beta(env)

    # alpha leaves the selection: 5 of the 10 tags hubmirror manages would go; the default allows 1.
    p = env.cli("--job", "mirror", "--images", "beta", "--prune")

    assert p.returncode == 1, p.stderr
    out = one_line(p.stderr)
    assert "it would delete 5 tags, more than 1 (the default --max-delete: 10 % of the 10 tags" in out
    assert "give --max-delete 5" in out
    assert env.dest_tags("alpha") == ALPHA_TAGS
    p = env.cli("--job", "mirror", "--images", "beta", "--prune", "--max-delete", "4")
    assert p.returncode == 1 and "more than 4 (--max-delete" in one_line(p.stderr)
    assert env.dest_tags("alpha") == ALPHA_TAGS

    config = env.root / "hubmirror.yaml"
    config.write_text("prune: true\nmax_delete: 5\n")
    p = env.cli("--job", "mirror", "--images", "beta", "--config", str(config))
    assert p.returncode == 0, p.stderr
    assert env.dest_tags("alpha") == [] and env.dest_tags("beta") == ALPHA_TAGS


def _prune_outcome(rep: dict[str, Any]) -> tuple[int, dict[str, int], list[str]]:
    """What a report says prune did: exit code, the failed, pruned and kept counts, the failed rows' sources."""
    counts = {k: rep["counts"][k] for k in ("failed", "pruned", "kept")}
    return rep["exit_code"], counts, sorted(i["source"] for i in rep["items"] if i["outcome"] == "failed")


def test_a_dry_run_with_prune_predicts_the_max_delete_refusal(env: Env) -> None:
    alpha_and_beta(env)

    # alpha leaves: 5 tags would go, the default --max-delete allows 1. The dry run says a real run refuses.
    dry = env.cli("--job", "mirror", "--images", "beta", "--prune", "--dry-run", "--json")
    assert dry.returncode == 1, dry.stderr
    refusal = [line for line in dry.stderr.splitlines() if "--prune:" in line]
    assert len(refusal) == 1, dry.stderr
    assert (
        "error: --prune: a real run would refuse, nothing would be deleted: it would delete 5 tags, more than 1 "
        "(the default --max-delete: 10 % of the 10 tags" in refusal[0]
    )
    real = env.cli("--job", "mirror", "--images", "beta", "--prune", "--json")
    assert real.returncode == dry.returncode
    dry_rep, real_rep = json.loads(dry.stdout), json.loads(real.stdout)
    assert dry_rep["dry_run"] and not real_rep["dry_run"]
    expected = (1, {"failed": 1, "pruned": 0, "kept": 5}, ["--prune"])
    assert _prune_outcome(dry_rep) == _prune_outcome(real_rep) == expected
    assert env.dest_tags("alpha") == ALPHA_TAGS

    # An explicit --max-delete too low: the same agreement, naming the flag.
    dry = env.cli("--job", "mirror", "--images", "beta", "--prune", "--max-delete", "4", "--dry-run", "--json")
    real = env.cli("--job", "mirror", "--images", "beta", "--prune", "--max-delete", "4", "--json")
    assert "more than 4 (--max-delete); give --max-delete 5" in one_line(dry.stderr)
    assert _prune_outcome(json.loads(dry.stdout)) == _prune_outcome(json.loads(real.stdout))
    assert real.returncode == dry.returncode == 1
    assert env.dest_tags("alpha") == ALPHA_TAGS

    # Allowed: the dry run lists the 5 deletions (exit 0) and deletes nothing; the real run deletes them.
    dry = env.cli("--job", "mirror", "--images", "beta", "--prune", "--max-delete", "5", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert "--prune would delete 5 tags" in one_line(dry.stderr) and "refuse" not in dry.stderr
    assert env.dest_tags("alpha") == ALPHA_TAGS
    real = env.cli("--job", "mirror", "--images", "beta", "--prune", "--max-delete", "5", "--json")
    assert real.returncode == 0, real.stderr
    assert _prune_outcome(json.loads(dry.stdout)) == _prune_outcome(json.loads(real.stdout))
    assert json.loads(real.stdout)["counts"]["pruned"] == 5
    assert env.dest_tags("alpha") == [] and env.dest_tags("beta") == ALPHA_TAGS


def test_a_dry_run_counts_the_tags_its_copies_add_as_managed_as_the_real_run_does(env: Env) -> None:
    alpha_and_beta(env)  # 10 tags managed: the default --max-delete allows 1
    gamma = ALPHA.replace("alpha", "gamma").replace("4" * 40, "6" * 40)
    env.commit({"alpha": ALPHA[: ALPHA.index("\nTags: 0.9")] + "\n", "gamma": gamma})
    env.seed(repos=["gamma"])

    # alpha's 0.9 and 0 leave while gamma's 5 tags arrive: 15 managed when prune runs, so 2 may go.
    args = ("--job", "mirror", "--images", "alpha,beta,gamma", "--prune", "--json")
    dry = env.cli(*args, "--dry-run")
    real = env.cli(*args)

    assert dry.returncode == real.returncode == 0, dry.stderr + real.stderr
    assert "--prune would delete 2 tags" in one_line(dry.stderr)
    assert _prune_outcome(json.loads(dry.stdout)) == _prune_outcome(json.loads(real.stdout))
    assert json.loads(real.stdout)["counts"]["pruned"] == 2
    assert env.dest_tags("alpha") == ["1", "1.0", "latest"]


# ------------------------------------------------------------------------------------------ finding 3


def test_a_foreign_tag_with_other_content_is_a_conflict_never_pruned_and_replaced_only_with_overwrite(
    env: Env,
) -> None:
    env.commit({"alpha": ALPHA, "beta": BETA, "pyish": None, "tiny": None})  # type: ignore[dict-item]
    seeded = env.seed()
    theirs = img.push_sync(env.dest, f"{NAMESPACE}/alpha", img.index("someone-else", ["linux/amd64"]), ["1"])

    p = env.cli("--job", "mirror", "--images", "alpha,beta", "--json")

    assert p.returncode == 1, p.stderr
    assert env.dest_digest("alpha", "1") == theirs.digest  # left as it was
    assert env.dest_digest("alpha", "1.0") == seeded["alpha:1.0"]  # the rest is mirrored
    rep = json.loads(p.stdout)
    failed = [i for i in rep["items"] if i["outcome"] == "failed"]
    assert [(i["dest"], i["tags"]) for i in failed] == [(env.key("alpha"), ["1"])]
    assert failed[0]["reason"].startswith("conflict:") and "--overwrite" in failed[0]["reason"]
    assert failed[0]["previous_digest"] == theirs.digest
    assert "docker.io/library/alpha:1" in rep["failed"]
    with State.open(env.state_path) as state:
        assert state.tag(env.key("alpha"), "1") is None

    # alpha leaves the selection: the tags hubmirror created go, the foreign one stays.
    p = env.cli("--job", "mirror", "--images", "beta", "--prune", "--max-delete", "100")
    assert p.returncode == 0, p.stderr
    assert env.dest_tags("alpha") == ["1"] and env.dest_digest("alpha", "1") == theirs.digest

    # --overwrite replaces it; it stays "not created by hubmirror", so prune never deletes it.
    p = env.cli("--job", "mirror", "--images", "alpha", "--overwrite")
    assert p.returncode == 0, p.stderr
    assert env.dest_digest("alpha", "1") == seeded["alpha:1"]
    with State.open(env.state_path) as state:
        rec = state.tag(env.key("alpha"), "1")
        assert rec is not None and not rec.created_by_hubmirror


# ------------------------------------------------------------------------------------------ finding 4


def platform_manifests(ix: img.Index, arch: str) -> set[str]:
    """The digests of *ix*'s image for *arch* and of its attestation."""
    entries = json.loads(ix.manifest.data)["manifests"]
    images = {e["digest"] for e in entries if e.get("platform", {}).get("architecture") == arch}
    return images | {e["digest"] for e in entries if (e.get("annotations") or {}).get(ATTESTATION_REF_DIGEST) in images}


def test_changing_the_platform_selection_copies_again_fetching_only_missing_manifests(env: Env) -> None:
    env.commit({"alpha": ALPHA, "pyish": None, "tiny": None})  # type: ignore[dict-item]
    seeded = env.seed()
    indexes = env.indexes("alpha")
    entries = [indexes["1.0"], indexes["0.9"]]

    p = env.cli("--platform", "linux/amd64")
    assert p.returncode == 0, p.stderr
    assert env.dest_digest("alpha", "1.0") != seeded["alpha:1.0"]  # a filtered index
    assert len(env.dest_manifest("alpha", "1.0")["manifests"]) == 2  # amd64 and its attestation

    # All platforms now: each index again (it is not at the destination), and only the arm64 children.
    env.hub.reset_counts()
    p = env.cli("--json")
    assert p.returncode == 0, p.stderr
    gets = sorted(r.ref for r in env.hub.records if r.method == "GET" and r.kind == "manifest")
    expected = {ix.digest for ix in entries} | set().union(*(platform_manifests(ix, "arm64") for ix in entries))
    assert gets == sorted(expected)
    for tag in ALPHA_TAGS:
        assert env.dest_digest("alpha", tag) == seeded[f"alpha:{tag}"]
    assert {i["reason"] for i in json.loads(p.stdout)["items"] if i["outcome"] == "copied"} == {"platforms changed"}

    # And back: the destination holds every manifest (the index too, by digest): no pull at all.
    env.hub.reset_counts()
    p = env.cli("--platform", "linux/amd64")
    assert p.returncode == 0, p.stderr
    assert env.hub.manifest_gets() == 0
    filtered = env.dest_manifest("alpha", "1.0")["manifests"]
    assert {m["digest"] for m in filtered} == platform_manifests(indexes["1.0"], "amd64")

    # Unchanged selection: up to date, nothing fetched.
    p = env.cli("--platform", "linux/amd64", "--json")
    assert p.returncode == 0 and env.hub.manifest_gets() == 0
    assert json.loads(p.stdout)["counts"]["copied"] == 0

    # A filtered index hubmirror wrote is not foreign even when the state is lost: its annotations say so.
    for f in env.state_path.parent.iterdir():
        f.unlink()
    p = env.cli("--platform", "linux/amd64", "--json")
    assert p.returncode == 0, p.stderr
    assert env.hub.manifest_gets() == 0 and json.loads(p.stdout)["counts"]["up_to_date"] > 0


# ------------------------------------------------------------------------------------------ SQLite


async def test_state_calls_run_off_the_event_loop(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every SQL statement of a sync (plan, copies, records, prune, run bookkeeping) runs on a worker
    thread: a state database locked by another process cannot stall the event loop."""
    env.seed()
    threads: set[int] = set()
    real_open = State.open.__func__  # type: ignore[attr-defined]

    def traced_open(cls: type[State], path: Any, **kwargs: Any) -> State:
        state: State = real_open(cls, path, **kwargs)
        state._conn.set_trace_callback(lambda _sql: threads.add(threading.get_ident()))
        return state

    monkeypatch.setattr(State, "open", classmethod(traced_open))
    loop_thread = threading.get_ident()

    _, report = await env.sync(prune=True)

    assert report.exit_code == 0, report.to_json()
    assert threads and loop_thread not in threads
    # The records written that way are all there.
    conn = sqlite3.connect(env.state_path)
    try:
        assert conn.execute("SELECT COUNT(*) FROM tags").fetchone()[0] > 0
    finally:
        conn.close()
