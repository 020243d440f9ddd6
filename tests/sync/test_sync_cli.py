"""``hubmirror sync`` through the real command line: dry run, image lists, OCI layout destination,
``--report`` and exit codes, the state lock, and credentials that never show up in output."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from test_sync_support import (
    NAMESPACE,
    Env,
    blob_files,
    catalog,
    head_digest,
    skopeo,
    skopeo_raw,
)

from _auth import PASSWORD, USER
from hubmirror.digest import sha256
from hubmirror.plan import Plan
from hubmirror.sync import SyncEvents
from hubmirror.testing import images as img
from hubmirror.testing.hub import HubEmulator


def test_dry_run_prints_the_plan_and_what_the_budget_allows_and_spends_nothing(env: Env) -> None:
    env.seed()
    env.hub.set_limit(100, remaining=20)

    p = env.cli("--dry-run")

    assert p.returncode == 0, p.stderr
    out = " ".join(p.stderr.split())
    assert "hubmirror sync --dry-run" in out
    for source, tags in [("pyish:3.14-slim", "3.14-slim, 3-slim, slim"), ("tiny:1.0", "1.0, 1, latest, old")]:
        assert f"copy │ docker.io/library/{source} │ {tags}" in out
    # index + 2 per platform; a SharedTag index whose children its entries bring costs 1: exactly the real cost
    assert "4 to copy, 0 to retag" in out and "pulls needed ≈ 14" in out
    assert "the source allows 20 of 100 pulls now" in out
    assert "budget now: 15 pulls (quota 20 left, keeping 5): 4 of 4 copies (≈ 14 pulls)" in out
    assert env.hub.manifest_gets() == 0
    assert env.hub.manifest_heads() > 0
    assert catalog(env.dest) == [] and blob_files(env.dest) == 0

    capped = env.cli("--dry-run", "--max-pulls", "4")
    assert "budget now: 4 pulls (quota 20 left, keeping 5; --max-pulls 4): 0 of 4 copies" in " ".join(
        capped.stderr.split()
    )
    assert env.hub.manifest_gets() == 0 and env.hub.remaining == 20


def test_list_alone_mirrors_explicit_references_without_reading_the_library(env: Env) -> None:
    other = env.make_registry()
    redis = img.push_sync(env.hub.upstream, "library/redis", img.index("redis"), ["7"])
    tool = img.push_sync(env.hub.upstream, "someorg/tool", img.image("tool"), ["1"])
    elsewhere = img.push_sync(other, "a/b", img.index("ab", ["linux/amd64"]), ["1"])
    listing = env.root / "images.txt"
    listing.write_text(f"# mirrored by hand\nredis:7\nsomeorg/tool:1  # a non-library image\n{other.host}/a/b:1\n")
    args = env.cli_args("--list", str(listing), "--json")
    args[args.index("--library") + 1] = str(env.root / "no-such-library")  # would fail if it were read

    p = subprocess.run(args, capture_output=True, text=True, env=env.cli_env(), timeout=120, check=False)

    assert p.returncode == 0, p.stderr
    assert head_digest(env.dest, f"{NAMESPACE}/redis", "7") == redis.digest
    assert head_digest(env.dest, f"{NAMESPACE}/someorg/tool", "1") == tool.digest
    assert head_digest(env.dest, f"{NAMESPACE}/a/b", "1") == elsewhere.digest
    rep = json.loads(p.stdout)
    assert rep["library"] is None and rep["commit"] is None
    assert sorted(rep["successful"]) == sorted(
        ["docker.io/library/redis:7", "docker.io/someorg/tool:1", f"{other.host}/a/b:1"]
    )


@skopeo
def test_oci_layout_destination(env: Env) -> None:
    seeded = env.seed()
    oci = env.root / "oci-mirror"

    p = subprocess.run(
        env.cli_args(dest=f"oci:{oci}"), capture_output=True, text=True, env=env.cli_env(), timeout=120, check=False
    )

    assert p.returncode == 0, p.stderr
    for repo, tag in [("pyish", "3.14-slim"), ("tiny", "old"), ("pyish", "3-trixie")]:
        assert sha256(skopeo_raw(f"oci:{oci}/{repo}:{tag}")) == seeded[f"{repo}:{tag}"]
    env.hub.reset_counts()
    again = subprocess.run(
        env.cli_args(dest=f"oci:{oci}"), capture_output=True, text=True, env=env.cli_env(), timeout=120, check=False
    )
    assert again.returncode == 0 and env.hub.manifest_gets() == 0


def test_report_file_lists_successful_and_failed_tags_with_exit_codes(env: Env) -> None:
    env.seed()
    report = env.root / "out" / "report.json"

    ok = env.cli("--report", str(report), "--images", "tiny")
    assert ok.returncode == 0, ok.stderr
    rep = json.loads(report.read_text())
    assert rep["exit_code"] == 0 and rep["failed"] == [] and rep["deferred"] == []
    assert sorted(rep["successful"]) == sorted(f"docker.io/library/tiny:{t}" for t in ["1.0", "1", "latest", "old"])

    listing = env.root / "list.txt"
    listing.write_text("tiny:1.0\nmissing:1\n")
    bad = env.cli("--report", str(report), "--list", str(listing))
    assert bad.returncode == 1
    rep = json.loads(report.read_text())
    assert rep["exit_code"] == 1
    assert rep["failed"] == ["docker.io/library/missing:1"]
    assert "docker.io/library/tiny:1.0" in rep["successful"]
    [failed] = [i for i in rep["items"] if i["outcome"] == "failed"]
    assert "not found" in failed["reason"]
    assert "missing" in bad.stderr

    capped = env.cli("--report", str(report), "--images", "pyish", "--max-pulls", "0")
    assert capped.returncode == 75
    rep = json.loads(report.read_text())
    assert rep["exit_code"] == 75 and rep["failed"] == [] and rep["deferred"]


class SecondSyncMeanwhile(SyncEvents):
    """While this sync holds the state, start another ``hubmirror sync`` on the same state."""

    def __init__(self, env: Env) -> None:
        self.env = env
        self.result: subprocess.CompletedProcess[str] | None = None

    def plan_ready(self, plan: Plan) -> None:
        self.result = self.env.cli()


async def test_two_syncs_on_one_state_the_second_fails_with_a_lock_error(env: Env) -> None:
    env.seed()
    events = SecondSyncMeanwhile(env)

    _, report = await env.sync(events)

    assert report.exit_code == 0
    assert events.result is not None
    assert events.result.returncode == 1
    err = " ".join(events.result.stderr.split())
    assert "another hubmirror sync" in err and "is using this state" in err, err
    assert env.hub.manifest_gets() == report.totals.manifest_gets  # the second one spent nothing


def test_no_password_or_token_in_output_report_or_state(env: Env, hub: HubEmulator) -> None:
    env.seed()
    config = env.root / "hubmirror.yaml"
    config.write_text(
        f"credentials:\n  {hub.host}:\n    username_env: HM_HUB_USER\n    password_env: HM_HUB_PASSWORD\n"
    )
    report = env.root / "report.json"
    secrets_env = {"HM_HUB_USER": USER, "HM_HUB_PASSWORD": PASSWORD}

    p = env.cli("--config", str(config), "--report", str(report), "--json", "-v", env=secrets_env)

    assert p.returncode == 0, p.stderr
    assert {r.user for r in hub.records if r.kind == "token"} == {USER}  # the credentials were used
    tokens = list(hub._tokens)  # what the emulator issued (private, read for this check only)
    assert tokens
    texts = {"stdout": p.stdout, "stderr": p.stderr, "report": report.read_text()}
    texts["state"] = env.state_path.read_bytes().decode("latin-1")
    for name, text in texts.items():
        assert PASSWORD not in text, name
        assert all(t not in text for t in tokens), name

    # A wrong password: the run fails, and says so without the password.
    wrong = "Wr0ng-pa55word-also-secret"
    bad = env.cli("--config", str(config), "--dry-run", env={**secrets_env, "HM_HUB_PASSWORD": wrong})
    assert bad.returncode == 1
    assert wrong not in bad.stdout + bad.stderr
    assert PASSWORD not in bad.stdout + bad.stderr


def test_config_errors_name_the_file_and_line(env: Env, tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("dest: 127.0.0.1:5000/mirror\nratelimit:\n  reserve: -1\n")
    p = env.cli("--config", str(config))
    assert p.returncode == 1
    assert "bad.yaml:3" in " ".join(p.stderr.split())
