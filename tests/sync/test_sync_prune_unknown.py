"""A repository the source says does not exist blocks prune only for its own tags (issue 18, item 2), from the
command line: a `--list` names a repository the source now answers 404 for, and another repository's tag left
the list. That tag is pruned; the unknown repository's recorded tags are kept (its selection is in doubt);
the run exits 1 with a line naming it; the same for a worker on a PostgreSQL state. Any other failure to check a
tag (auth, 5xx) still makes prune delete nothing in the run.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from test_sync_support import Env, env_fixture  # noqa: F401  (the `env` fixture)

from hubmirror._errors import NotFound
from hubmirror.media import Descriptor
from hubmirror.plan import Plan, Target, check
from hubmirror.registry.options import ClientOptions
from hubmirror.state import State
from hubmirror.store.registry import RegistryStore
from hubmirror.testing.registry import Registry


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_an_unknown_repository_keeps_its_own_tags_and_the_rest_is_pruned(
    env: Env, request: pytest.FixtureRequest, backend: str
) -> None:
    """On PostgreSQL the sync is a worker: the repository the source says does not exist is its unit, and the
    worker that closes the run keeps that repository's tags and prunes the rest, as a single process does."""
    where = str(env.state_path)
    if backend == "postgresql":
        where = request.getfixturevalue("postgres").new_database()

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        argv = env.cli_args(*args)
        argv[argv.index("--state") + 1] = where
        return subprocess.run(argv, capture_output=True, text=True, env=env.cli_env(), timeout=120, check=False)

    env.seed()
    listing = env.root / "images.list"
    listing.write_text("pyish:3.14-slim\npyish:3.14-trixie\ntiny:1.0\ntiny:old\n")
    first = cli("--list", str(listing))
    assert first.returncode == 0, first.stderr
    assert env.dest_tags("pyish") == ["3.14-slim", "3.14-trixie"] and env.dest_tags("tiny") == ["1.0", "old"]

    # pyish:3.14-trixie and tiny:old leave the list; the source now says tiny does not exist.
    listing.write_text("pyish:3.14-slim\ntiny:1.0\n")
    env.hub.fail_always(r"^/v2/library/tiny/", 404)
    p = cli("--list", str(listing), "--prune", "--max-delete", "10")

    assert p.returncode == 1, p.stderr
    assert "Traceback" not in p.stderr
    named = [line for line in p.stderr.splitlines() if "tiny:1.0" in line and "not found" in line]
    assert len(named) == 1, p.stderr
    assert "prune refused" not in p.stderr, p.stderr
    assert env.dest_tags("pyish") == ["3.14-slim"]  # the other repository's tag that left is pruned
    assert env.dest_tags("tiny") == ["1.0", "old"]  # the unknown repository's are all kept
    with State.open(where) as state:
        assert sorted(r.tag for r in state.tags(env.key("tiny"))) == ["1.0", "old"]
        assert sorted(r.tag for r in state.tags(env.key("pyish"))) == ["3.14-slim"]


def test_a_repository_that_cannot_be_checked_still_blocks_the_whole_prune(env: Env) -> None:
    env.seed()
    listing = env.root / "images.list"
    listing.write_text("pyish:3.14-slim\npyish:3.14-trixie\ntiny:1.0\n")
    first = env.cli("--list", str(listing))
    assert first.returncode == 0, first.stderr

    listing.write_text("pyish:3.14-slim\ntiny:1.0\n")
    env.hub.fail_always(r"^/v2/library/tiny/", 403)  # refused, not "does not exist": the selection is in doubt
    p = env.cli("--list", str(listing), "--prune", "--max-delete", "10")

    assert p.returncode == 1, p.stderr
    assert "prune refused" in " ".join(p.stderr.split()), p.stderr
    assert env.dest_tags("pyish") == ["3.14-slim", "3.14-trixie"]  # nothing deleted


async def test_the_sources_own_not_found_message_is_the_reason(tmp_path: Path, registry: Registry) -> None:
    """A source that says more than "not found" (Docker Hub's 401 insufficient_scope: "not found, or not
    accessible with these credentials") is quoted as the failure; the target counts as missing."""
    said = "docker.io/library/gone: not found, or not accessible with these credentials"

    class Unknown(RegistryStore):
        async def head_manifest(self, repo: str, ref: str) -> Descriptor | None:
            raise NotFound(said, status=401, repository=repo)

    source = Unknown(registry.host, ClientOptions())
    dest = RegistryStore(registry.host, ClientOptions())
    target = Target("docker.io/library/gone:1", "docker.io", "library/gone", "1", "mirror/gone", "1")
    plan = Plan(targets=[target])
    try:
        with State.open(tmp_path / "state.db") as state:
            await check(plan, sources=lambda _: source, dest=dest, state=state, dest_key=lambda r: f"x/{r}")
    finally:
        await source.close()
        await dest.close()

    assert plan.failed == [(target, said)]
    assert plan.missing == [target]
