"""``--state postgresql://…`` from the command line: a real PostgreSQL server, the Hub emulator, a real
destination registry. A sync and its no-op re-run on PostgreSQL; `status` reads it; a wrong or unreachable
URL is one line naming the host, never the password, and nothing is done; an unknown scheme is refused."""

from __future__ import annotations

import json
import subprocess

from test_sync_support import HUBMIRROR, Env

from hubmirror.state import State
from hubmirror.testing.postgres import PostgresServer


def _status(env: Env, where: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [HUBMIRROR, "status", "--state", where, "--json"],
        capture_output=True,
        text=True,
        env=env.cli_env(),
        timeout=60,
        check=False,
    )


def _with_state(args: list[str], where: str) -> list[str]:
    i = args.index("--state")
    return [*args[: i + 1], where, *args[i + 2 :]]


def _run(env: Env, where: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _with_state(env.cli_args(*extra), where),
        capture_output=True,
        text=True,
        env=env.cli_env(),
        timeout=120,
        check=False,
    )


def test_a_sync_on_a_postgresql_state_then_a_no_op_rerun(env: Env, postgres: PostgresServer) -> None:
    env.seed(repos=["tiny"])
    where = postgres.new_database()
    first = _run(env, where, "--images", "tiny")
    assert first.returncode == 0, first.stderr
    gets = env.hub.manifest_gets()
    assert gets > 0
    assert sorted(env.dest_tags("tiny")) == ["1", "1.0", "latest", "old"]

    again = _run(env, where, "--images", "tiny")
    assert again.returncode == 0, again.stderr
    assert env.hub.manifest_gets() == gets  # the records came back from PostgreSQL: nothing pulled again
    with State.open(where) as st:
        assert {r.tag for r in st.tags()} == {"1", "1.0", "latest", "old"}
        assert [r.status for r in st.runs()] == ["completed", "completed"]
    assert not env.state_path.exists()  # nothing went to a SQLite file

    status = _status(env, where)
    assert status.returncode == 0, status.stderr
    info = json.loads(status.stdout)
    assert info["tags"] == 4
    assert postgres.password not in status.stdout + status.stderr
    assert info["state"] == where.replace(f":{postgres.password}@", "@")


def test_a_wrong_or_unreachable_postgresql_url_is_one_line_without_the_password(
    env: Env, postgres: PostgresServer
) -> None:
    env.seed(repos=["tiny"])
    wrong = postgres.new_database().replace(postgres.password, "not-the-password")
    unreachable = f"postgresql://hubmirror:s3cr3t-pw@127.0.0.1:{_closed_port()}/db"
    for where, secret in ((wrong, "not-the-password"), (unreachable, "s3cr3t-pw")):
        out = _run(env, where, "--images", "tiny")
        assert out.returncode == 1, out.stderr
        lines = [line for line in out.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, out.stderr
        assert "127.0.0.1" in lines[0] and "state database" in lines[0]
        assert secret not in out.stderr + out.stdout
        assert "Traceback" not in out.stderr
    assert env.hub.manifest_gets() == 0
    assert env.dest_tags("tiny") == []


def test_an_unknown_state_scheme_is_refused_not_taken_for_a_file(env: Env) -> None:
    out = _run(env, "mysql://user:pw@127.0.0.1/db", "--images", "tiny")
    assert out.returncode == 2  # a bad --state value: a usage error
    assert "unknown state scheme 'mysql'" in out.stderr
    assert "pw@" not in out.stderr
    assert not list(env.root.glob("mysql*"))
    assert env.hub.manifest_gets() == 0


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
