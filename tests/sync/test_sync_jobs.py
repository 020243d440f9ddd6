"""Jobs that share a state and a destination (issue 14): each tag is owned by the jobs that select it, and
prune deletes only tags the running job owns; a tag two jobs select stays until neither does. An unnamed job
is named by where its selection is defined; records written before jobs were tracked get an owner on the
first run of a job that selects them, without a deletion; ``hubmirror status`` lists the jobs."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from test_sync_support import NAMESPACE, Env

from hubmirror.config import SyncConfig, load_config
from hubmirror.state import _MIGRATIONS, SCHEMA_VERSION, State
from hubmirror.testing import images as img

HUBMIRROR = str(Path(sys.executable).parent / "hubmirror")
PLATFORMS = (
    "linux/amd64",
    "linux/arm/v7",
    "linux/arm64/v8",
    "linux/386",
    "linux/ppc64le",
    "linux/s390x",
    "linux/riscv64",
    "linux/mips64le",
)


def seed(env: Env, *names: str) -> dict[str, str]:
    """Push an 8-platform index (with attestations) per ``repo:tag`` of *names* to the Hub; name → digest."""
    out = {}
    for name in names:
        repo, tag = name.split(":")
        out[name] = img.push_sync(env.hub.upstream, f"team/{repo}", img.index(name, PLATFORMS), [tag]).digest
    return out


def write_list(path: Path, *names: str) -> Path:
    path.write_text("".join(f"docker.io/team/{n}\n" for n in names))
    return path


def sync(env: Env, listed: Path, *args: str) -> dict[str, Any]:
    p = env.cli("--list", str(listed), "--json", *args)
    assert p.returncode == 0, p.stderr
    rep: dict[str, Any] = json.loads(p.stdout)
    return rep


def pruned(rep: dict[str, Any]) -> set[str]:
    return {f"{i['dest'].rsplit('/', 1)[1]}:{t}" for i in rep["items"] if i["outcome"] == "pruned" for t in i["tags"]}


def there(env: Env, name: str) -> bool:
    repo, tag = name.split(":")
    return env.dest_digest(f"team/{repo}", tag) is not None


def status(env: Env, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [HUBMIRROR, "status", "--state", str(env.state_path), *args], capture_output=True, text=True, check=False
    )


def test_two_jobs_on_one_state_and_namespace_never_prune_each_others_tags(env: Env, tmp_path: Path) -> None:
    seed(env, "a:1", "a:2", "b:1", "b:2", "shared:1")
    a = write_list(tmp_path / "a.list", "a:1", "a:2", "shared:1")
    b = write_list(tmp_path / "b.list", "b:1", "b:2", "shared:1")
    sync(env, a)
    sync(env, b)

    # Job B prunes: job A's tags are not B's, whatever B selects.
    write_list(b, "b:1", "shared:1")
    rep = sync(env, b, "--prune")
    assert pruned(rep) == {"b:2"}
    assert all(there(env, n) for n in ("a:1", "a:2", "shared:1", "b:1"))

    # A lets go of shared:1, which B still selects: it stays; A's own a:2 goes.
    write_list(a, "a:1")
    rep = sync(env, a, "--prune", "--max-delete", "1")
    assert pruned(rep) == {"a:2"}
    kept = {t: i["reason"] for i in rep["items"] if i["outcome"] == "kept" for t in i["tags"]}
    assert "shared:1" not in pruned(rep) and "job list=" in kept["1"] and "b.list" in kept["1"]
    assert there(env, "shared:1") and there(env, "b:1") and there(env, "a:1")

    # Neither selects it now: B, its last owner, deletes it.
    write_list(b, "b:1")
    rep = sync(env, b, "--prune", "--max-delete", "1")
    assert pruned(rep) == {"shared:1"}
    assert not there(env, "shared:1") and there(env, "a:1") and there(env, "b:1")
    # And A's next prune deletes nothing of B's.
    assert pruned(sync(env, a, "--prune")) == set()
    assert there(env, "b:1")


def test_unnamed_jobs_are_named_by_where_their_selection_is_defined(tmp_path: Path) -> None:
    a, b = tmp_path / "a.list", tmp_path / "b.list"
    for f in (a, b):
        f.write_text("docker.io/library/alpine:3\n")
    base = {"dest": "r.example:5000/mirror"}

    def job(**over: Any) -> str:
        return SyncConfig().merge({**base, **over}).job_id

    assert job(list=a) == f"list={a}" and job(list=b) == f"list={b}" and job(list=a) != job(list=b)
    a.write_text("docker.io/library/alpine:3\ndocker.io/library/busybox:1\n")  # edited in place: the same job
    assert job(list=a) == f"list={a}"
    assert job(list=tmp_path / "sub" / ".." / "a.list") == job(list=a)
    # The library with its image filters (in any order), and the tag sources.
    assert job(images=["python", "node"]) == job(images=["node", "python"]) != job(images=["python"])
    assert job(images=["python"]).startswith("library=") and "images=python" in job(images=["python"])
    assert job(repos=["ghcr.io/a/b"], list=a) == f"list={a} repo=ghcr.io/a/b"
    # Tag and platform filters do not make another job.
    assert job(images=["python"], exclude_tags=["rc"], platforms=["linux/amd64"]) == job(images=["python"])
    # A config file names the job by its path; flags that change the selection on top of it count too.
    config = tmp_path / "hubmirror.yaml"
    config.write_text("dest: r.example:5000/mirror\nimages: [python]\n")
    assert load_config(config).merge({}).job_id == f"config={config.resolve()}"
    assert load_config(config).merge({"prune": True}).job_id == f"config={config.resolve()}"
    assert "images=node" in load_config(config).merge({"images": ["node"]}).job_id
    # A name wins.
    assert job(list=a, job="nightly") == "nightly"
    config.write_text("dest: r.example:5000/mirror\njob: team-a\n")
    assert load_config(config).job_id == "team-a"


def test_a_job_name_that_is_not_one_is_a_one_line_error(env: Env) -> None:
    p = env.cli("--job", "two words")
    assert p.returncode == 2  # a bad flag value is a usage error, as click gives for an unknown flag
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--job" in lines[0] and "not a job name" in lines[0], p.stderr


def v4_state(path: Path) -> None:
    """Turn *path*, a state this hubmirror wrote, into what the hubmirror before jobs wrote (schema 4)."""
    conn = sqlite3.connect(path)
    try:
        if conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == 4:
            return  # written by the hubmirror before jobs itself
        conn.executescript(
            """
            DROP TABLE tag_owners;
            DROP TABLE deletions;
            DROP TABLE work_runs;
            DROP TABLE work_units;
            DROP TABLE work_workers;
            DROP TABLE pull_quota;
            DROP TABLE work_blobs;
            DROP TABLE serve_triggers;
            DROP TABLE serve_deliveries;
            DROP TABLE pull_quota_workers;
            DROP TABLE pending_changes;
            DROP TABLE tag_intents;
            ALTER TABLE runs DROP COLUMN job;
            DELETE FROM meta WHERE key LIKE 'children_checked:%';
            UPDATE schema_version SET version = 4;
            """
        )
        conn.commit()
        schema = sorted(r[0] for r in conn.execute("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL"))
    finally:
        conn.close()
    reference = sqlite3.connect(":memory:")
    for step in range(1, 5):
        reference.executescript(_MIGRATIONS[step])
    reference.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    want = sorted(r[0] for r in reference.execute("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL"))
    reference.close()
    assert [" ".join(s.split()) for s in schema] == [" ".join(s.split()) for s in want]


def test_records_written_before_jobs_get_owners_on_the_first_run_without_a_deletion(env: Env, tmp_path: Path) -> None:
    seed(env, "a:1", "a:2", "b:1", "b:2")
    a = write_list(tmp_path / "a.list", "a:1", "a:2")
    b = write_list(tmp_path / "b.list", "b:1", "b:2")
    sync(env, a)
    sync(env, b)
    v4_state(env.state_path)  # as the hubmirror before jobs left it: records, no owners

    # The first run of B after the upgrade prunes: A's records are no job's yet, never B's to delete.
    write_list(b, "b:1")
    rep = sync(env, b, "--prune", "--max-delete", "10")
    assert pruned(rep) == set() and rep["counts"]["kept"] == 0
    assert all(there(env, n) for n in ("a:1", "a:2", "b:1", "b:2"))
    with State.open(env.state_path) as state:
        assert state.schema_version == SCHEMA_VERSION
        owners = state.tag_owners()
        assert owners[(env.key("team/b"), "1")] == {f"list={b}"}
        assert (env.key("team/a"), "1") not in owners  # A has not run since
        assert {(t.dest_repo, t.tag) for t in state.unowned_tags()} >= {(env.key("team/a"), "1")}

    # A's first run adopts what it selects; from then on its prune deletes what leaves it.
    sync(env, a)
    write_list(a, "a:1")
    assert pruned(sync(env, a, "--prune", "--max-delete", "1")) == {"a:2"}
    assert there(env, "a:1") and there(env, "b:2")  # b:2 left B before B owned it: nobody prunes it


def test_status_lists_the_jobs_and_what_each_owns(env: Env, tmp_path: Path) -> None:
    seed(env, "a:1", "b:1", "shared:1")
    a = write_list(tmp_path / "a.list", "a:1", "shared:1")
    assert env.cli("--list", str(a)).returncode == 0
    b = write_list(tmp_path / "b.list", "b:1", "shared:1")
    assert env.cli("--list", str(b), "--job", "team-b").returncode == 0

    p = status(env, "--json")
    assert p.returncode == 0, p.stderr
    jobs = {j["name"]: j for j in json.loads(p.stdout)["jobs"]}
    assert set(jobs) == {f"list={a}", "team-b"}
    assert jobs["team-b"]["owned"] == {env.key("team/b"): ["1"], env.key("team/shared"): ["1"]}
    assert jobs[f"list={a}"]["owned"] == {env.key("team/a"): ["1"], env.key("team/shared"): ["1"]}
    assert jobs["team-b"]["tags"] == 2 and jobs["team-b"]["last_run"]["status"] == "completed"

    human = status(env)
    assert human.returncode == 0
    text = " ".join(human.stderr.split())
    assert "team-b" in text and str(a) in text and f"{NAMESPACE}/team/shared" in text


@pytest.mark.parametrize("where", ["flag", "config"])
def test_a_named_job_keeps_its_tags_when_its_flags_change(env: Env, tmp_path: Path, where: str) -> None:
    seed(env, "a:1", "a:2")
    name = ["--job", "nightly"] if where == "flag" else ["--config", str(tmp_path / "c.yaml")]
    (tmp_path / "c.yaml").write_text("job: nightly\n")
    assert sync(env, write_list(tmp_path / "one.list", "a:1", "a:2"), *name)
    # Another list file, the same job: what left it is this job's to prune.
    rep = sync(env, write_list(tmp_path / "two.list", "a:1"), *name, "--prune", "--max-delete", "1")
    assert pruned(rep) == {"a:2"} and there(env, "a:1")
