"""Several ``hubmirror sync`` workers on one PostgreSQL state (issue 15 items 2, 3): from the command line,
with a real PostgreSQL server, the Hub emulator and a real destination registry.

Three workers divide one job by destination repository (every tag right, the minimum of manifest GETs, no
blob uploaded twice to one repository, the work spread); a worker SIGKILLed mid-run loses its lease and the
others finish its repository in the same run; three workers with 20 pulls left spend at most 20 together,
provoke no 429 and all exit as deferred; the last worker prunes, once for the run.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from test_sync_support import _HEAD, Env, get_manifest, manifests_of

from hubmirror.state import State
from hubmirror.testing.postgres import PostgresServer

REPOS = 6  # r1 … r6: 2 entries each, 2 platforms: 10 manifests (pulls) per repository


def repos_library(n: int = REPOS, entries: int = 2) -> dict[str, str]:
    """Repositories r1 … rN, each with *entries* entries of two platforms (own content, no sharing)."""
    files = {"pyish": "", "tiny": ""}
    for r in range(1, n + 1):
        text = _HEAD.format(name=f"r{r}") + f"GitCommit: {r:040x}\n"
        for i in range(entries, 0, -1):
            text += f"\nTags: {i}.0, {i}\nArchitectures: amd64, arm64v8\nDirectory: {i}\n"
        files[f"r{r}"] = text
    return files


Workers = list[tuple[subprocess.Popen[str], Path]]


def start_workers(env: Env, where: str, n: int, *extra: str, lease: str = "30s") -> Workers:
    """*n* ``hubmirror sync`` processes with the same config and state, each with its own --report."""
    config = env.root / "workers.yaml"
    config.write_text(f"lease: {lease}\n")
    out = []
    for i in range(n):
        report = env.root / f"report-{i}.json"
        args = env.cli_args("--config", str(config), "--report", str(report), *extra)
        at = args.index("--state")
        args[at + 1] = where
        log = (env.root / f"worker-{i}.log").open("w")
        out.append((subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, text=True, env=env.cli_env()), report))
    return out


def hold_until_joined(env: Env, where: str, n: int, *, then: float, timeout: float = 60) -> None:
    """Blob downloads are held until *n* workers have joined the run (a loaded machine starts them far
    apart), then take *then* seconds each."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with State.open(where) as st:
                work = st.work_in_progress(now=time.time())
        except Exception:  # the first worker may still be creating the schema
            work = []
        if any(len(w["workers"]) >= n for w in work):
            env.hub.set_delay(then)
            return
        time.sleep(0.1)
    env.hub.set_delay(then)
    raise AssertionError(f"{n} workers did not join one run")


def wait_all(workers: Workers, timeout: float = 120) -> list[int]:
    return [p.wait(timeout=timeout) for p, _ in workers]


def log_of(env: Env, i: int) -> str:
    return (env.root / f"worker-{i}.log").read_text()


def reports(workers: Workers) -> list[dict[str, Any]]:
    return [json.loads(r.read_text()) for _, r in workers if r.exists()]


def all_manifests(env: Env) -> set[str]:
    return {d for r in range(1, REPOS + 1) for ix in env.indexes(f"r{r}").values() for d in manifests_of(ix)}


def dest_blobs(env: Env, names: list[str] | None = None) -> set[tuple[str, str]]:
    """(repository, blob) of every blob the destination's tags reach (repositories *names*, or r1 … rN)."""
    out: set[tuple[str, str]] = set()

    def walk(repo: str, ref: str) -> None:
        m = json.loads(get_manifest(env.dest, f"mirror/{repo}", ref))
        for child in m.get("manifests", []):
            walk(repo, child["digest"])
        for blob in [m["config"], *m["layers"]] if "config" in m else []:
            out.add((repo, blob["digest"]))

    for name in names if names is not None else [f"r{r}" for r in range(1, REPOS + 1)]:
        for tag in env.dest_tags(name):
            walk(name, tag)
    return out


def assert_every_tag_right(env: Env) -> None:
    for r in range(1, REPOS + 1):
        indexes = env.indexes(f"r{r}")
        assert sorted(env.dest_tags(f"r{r}")) == sorted(indexes)
        for tag, ix in indexes.items():
            assert env.dest_digest(f"r{r}", tag) == ix.digest, f"r{r}:{tag}"


def copied_by(rep: dict[str, Any]) -> list[str]:
    return [i["dest"] for i in rep["items"] if i["outcome"] == "copied"]


def test_three_workers_divide_one_job(env: Env, postgres: PostgresServer) -> None:
    env.commit(repos_library())
    env.seed()
    env.hub.set_delay(3600)  # copies wait until the three have joined: the first cannot do it all alone
    where = postgres.new_database()

    workers = start_workers(env, where, 3)
    hold_until_joined(env, where, 3, then=0.1)
    codes = wait_all(workers)

    assert codes == [0, 0, 0], [log_of(env, i) for i in range(3)]
    assert_every_tag_right(env)
    assert env.hub.manifest_gets() == len(all_manifests(env))  # the minimum: each manifest once, all workers
    reps = reports(workers)
    assert len(reps) == 3
    pairs = dest_blobs(env)
    uploaded = sum(r["totals"]["blobs_copied"] + r["totals"]["blobs_mounted"] for r in reps)
    assert uploaded == len(pairs)  # no blob uploaded twice to one repository
    copied = [copied_by(r) for r in reps]
    assert sum(1 for c in copied if c) >= 2, copied  # the work was spread
    by_worker = [set(c) for c in copied]
    assert sum(len(c) for c in by_worker) == len(set().union(*by_worker)) == REPOS  # each repository by one worker
    # One run, recorded once, with every worker's totals; each worker's report says what the whole run did.
    with State.open(where) as st:
        runs = st.runs()
        assert [r.status for r in runs] == ["completed"]
        assert runs[0].summary["manifest_gets"] == env.hub.manifest_gets()
        assert len(st.tags()) == 4 * REPOS
        units = st.work_units(runs[0].id)
    assert [(u[0].rsplit("/", 1)[1], u[1]) for u in units] == [(f"r{r}", "done") for r in range(1, REPOS + 1)]
    for rep in reps:
        assert rep["run"]["workers"] == 3 and rep["run"]["status"] == "completed"
        assert rep["run"]["totals"]["manifest_gets"] == env.hub.manifest_gets()
    assert sum(1 for rep in reps if rep["run"]["closer"]) == 1  # one closed the run

    # The next run of the three: nothing to pull, nothing to upload.
    env.hub.reset_counts()
    again = start_workers(env, where, 3)
    assert wait_all(again) == [0, 0, 0]
    assert env.hub.manifest_gets() == 0
    assert sum(r["totals"]["blobs_copied"] for r in reports(again)) == 0


def test_a_worker_killed_mid_run_leaves_its_repository_to_the_others(env: Env, postgres: PostgresServer) -> None:
    env.commit(repos_library())
    env.seed()
    env.hub.set_delay(1.5)  # every blob held: a worker is mid-copy for seconds
    where = postgres.new_database()

    workers = start_workers(env, where, 3, lease="5s")  # (shorter: a loaded machine may miss a heartbeat)
    victim, unit = _claimed_worker(where, workers)
    os.kill(victim.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    env.hub.set_delay(0.2)
    others = [(p, r) for p, r in workers if p is not victim]
    codes = wait_all(others)

    assert victim.wait(timeout=10) == -signal.SIGKILL
    assert codes == [0, 0], [log_of(env, i) for i in range(3)]
    assert time.monotonic() - killed_at < 60
    assert_every_tag_right(env)  # in this run: no other run was started
    with State.open(where) as st:
        runs = st.runs()
        assert [r.status for r in runs] == ["completed"]
        units = {u[0]: u for u in st.work_units(runs[0].id)}
        assert {u[1] for u in units.values()} == {"done"}
        assert units[unit][3] >= 2  # claimed again once the dead worker's lease ran out
        assert f"pid {victim.pid} " not in (units[unit][2] or "")
        assert len(st.tags()) == 4 * REPOS


def _claimed_worker(where: str, workers: Workers, timeout: float = 60) -> tuple[subprocess.Popen[str], str]:
    """A worker holding a claimed repository (as the state says), and that repository."""
    by_pid = {p.pid: p for p, _ in workers}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with State.open(where) as st:
                run = st.runs(1)
                units = st.work_units(run[0].id) if run else []
        except Exception:  # the first worker may still be creating the schema
            units = []
        for name, status, worker, _ in units:
            m = re.match(r"pid (\d+) ", worker or "")
            if status == "claimed" and m and int(m.group(1)) in by_pid:
                return by_pid[int(m.group(1))], name
        time.sleep(0.1)
    raise AssertionError("no worker claimed a repository")


def test_three_workers_share_twenty_pulls(env: Env, postgres: PostgresServer) -> None:
    env.commit(repos_library())
    env.seed()
    env.hub.set_delay(3600)  # the run lasts until the three have joined it
    reserve = 5
    env.hub.set_limit(100, remaining=20 + reserve)
    where = postgres.new_database()

    workers = start_workers(env, where, 3, "--reserve", str(reserve))
    hold_until_joined(env, where, 3, then=0.1)
    codes = wait_all(workers)

    spent = [r for r in env.hub.records if r.method == "GET" and r.kind == "manifest" and r.status == 200]
    assert 0 < len(spent) <= 20
    assert not [r for r in env.hub.records if r.status == 429]
    assert codes == [75, 75, 75], [log_of(env, i) for i in range(3)]
    reps = reports(workers)
    assert sum(r["totals"]["manifest_gets"] for r in reps) == len(spent)
    assert all(r["run"]["status"] == "deferred" for r in reps)
    with State.open(where) as st:
        assert [r.status for r in st.runs()] == ["deferred"]
        assert st.deferred()  # the rest waits for the next run
        key = f"{env.hub.host} anonymous"
        quota = st.pull_quota(key)
        assert quota is not None and quota[1] == 0  # every pull taken was settled


def test_the_last_worker_prunes_once_for_the_run(env: Env, postgres: PostgresServer) -> None:
    env.commit(repos_library())
    env.seed()
    where = postgres.new_database()
    assert wait_all(start_workers(env, where, 1)) == [0]  # one worker alone does the whole job
    files = repos_library()
    files["r6"] = files["r6"].replace("\nTags: 2.0, 2\nArchitectures: amd64, arm64v8\nDirectory: 2\n", "")
    env.commit(files)

    workers = start_workers(env, where, 3, "--prune")
    assert wait_all(workers) == [0, 0, 0], [log_of(env, i) for i in range(3)]

    assert env.dest_tags("r6") == ["1", "1.0"]
    pruned = [[t for i in r["items"] if i["outcome"] == "pruned" for t in i["tags"]] for r in reports(workers)]
    assert [sorted(p) for p in pruned if p] == [["2", "2.0"]]  # by one worker, the one that closed the run
    with State.open(where) as st:
        # (a worker that starts after this run was closed, on a loaded machine, runs a no-op run of its own)
        assert {r.status for r in st.runs()} == {"completed"}
        assert {r.tag for r in st.tags(env.key("r6"))} == {"1", "1.0"}
        assert st.library_commit(str(env.library_repo)) == env.commits[-1]
