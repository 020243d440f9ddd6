"""`sync --prune` into a destination whose tag list never ends, or loops (`hubmirror.testing.malicious`).

Before it deletes anything in a repository, prune lists its tags to find what the tags that stay reference:
that list is bounded (pages, time, loops) and a broken one fails the run with one clear line naming the
registry and repository, with nothing deleted there.
"""

from __future__ import annotations

import subprocess

import pytest
from test_sync_support import LIB_V2, Env

from _auth import PASSWORD, USER
from hubmirror.registry.client import TAG_LIST_MAX_PAGES
from hubmirror.testing.malicious import MaliciousRegistry


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
