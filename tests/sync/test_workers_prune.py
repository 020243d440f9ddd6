"""Prune in a run shared by workers (issue 15 item 2): the last worker prunes for all, from the state after
every worker's copies. A tag moved by any worker (the closer or another) lets go of its old image's signature
in the run that moves it, as in a single process
(`test_sync_prune_reference.py::test_a_moved_tags_old_signature_is_pruned_in_the_run_that_moves_it`)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from test_sync_prune_reference import PLATFORMS, tags_of
from test_sync_support import Env
from test_workers import hold_until_joined

from hubmirror.testing import images as img
from hubmirror.testing.postgres import PostgresServer

WORKERS = 3
OTHERS = [f"team/o{k}" for k in range(10)]  # rebuilt too: every worker copies, any of them may close


def test_a_tag_moved_by_any_worker_lets_go_of_its_old_signature_in_that_run(
    env: Env, tmp_path: Path, postgres: PostgresServer
) -> None:
    where = postgres.new_database()
    upstream = env.hub.upstream

    def run(*args: str, hold: bool = False) -> list[dict[str, Any]]:
        procs = []
        for i in range(WORKERS):
            argv = env.cli_args(*args, "--report", str(tmp_path / f"r{i}.json"))
            argv[argv.index("--state") + 1] = where
            out = subprocess.DEVNULL
            procs.append(subprocess.Popen(argv, stdout=out, stderr=subprocess.PIPE, text=True, env=env.cli_env()))
        if hold:
            hold_until_joined(env, where, WORKERS, then=0.05)
        for p in procs:
            assert p.wait(120) == 0, p.stderr.read() if p.stderr else ""
        return [json.loads((tmp_path / f"r{i}.json").read_text()) for i in range(WORKERS)]

    def sign(digest: str) -> None:
        signature = img.cosign_signature(digest, reference="docker.io/team/app")
        img.push_sync(upstream, "team/app", signature, [img.cosign_tag(digest)])

    old = img.push_sync(upstream, "team/app", img.index("app", PLATFORMS), ["1.0"])
    sign(old.digest)
    for repo in OTHERS:
        img.push_sync(upstream, repo, img.index(repo, PLATFORMS), ["1.0"])
    listed = tmp_path / "images.list"
    listed.write_text("".join(f"docker.io/{repo}:1.0\n" for repo in ["team/app", *OTHERS]))
    run("--list", str(listed))
    assert env.dest_tags("team/app") == sorted(["1.0", img.cosign_tag(old.digest)])

    # Everything is rebuilt upstream, app signed again; the copies wait until the three have joined.
    new = img.push_sync(upstream, "team/app", img.index("app", PLATFORMS, generation=1), ["1.0"])
    sign(new.digest)
    for repo in OTHERS:
        img.push_sync(upstream, repo, img.index(repo, PLATFORMS, generation=1), ["1.0"])
    env.hub.set_delay(3600)
    reps = run("--list", str(listed), "--prune", hold=True)

    closers = [r for r in reps if r["run"]["closer"]]
    assert len(closers) == 1
    assert list(tags_of(closers[0], "pruned")) == [img.cosign_tag(old.digest)]
    assert env.dest_tags("team/app") == sorted(["1.0", img.cosign_tag(new.digest)])
    assert env.dest_digest("team/app", "1.0") == new.digest
