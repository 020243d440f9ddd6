"""Readable failures and small truths of ``hubmirror sync`` (issue 16, items 8 and 9): failures grouped by
cause, references never cut off a terminal, a wrong destination in one line before any work, no rows for
sources that did nothing, "did you mean" for config keys, and a hint to ``--library`` when it cannot be read."""

from __future__ import annotations

import socket
import subprocess

from test_sync_support import NAMESPACE, Env, blob_files

from _auth import PASSWORD, USER


def error_lines(p: subprocess.CompletedProcess[str]) -> list[str]:
    assert "Traceback" not in p.stderr, p.stderr
    return [line for line in p.stderr.splitlines() if line.strip()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_destination_is_one_line_before_any_work(env: Env) -> None:
    env.seed()
    dest = f"127.0.0.1:{free_port()}/{NAMESPACE}"

    p = env.cli("--images", "tiny,pyish", dest=dest)

    assert p.returncode == 1, p.stderr
    [line] = error_lines(p)
    assert line.startswith(f"error: destination {dest}: ") and "unreachable" in line, line
    assert env.hub.manifest_gets() == 0


def test_destination_refusing_the_credentials_is_one_line_before_any_work(env: Env) -> None:
    env.seed()
    dest = env.make_registry(username=USER, password=PASSWORD)
    config = env.root / "hubmirror.yaml"
    config.write_text(f"credentials:\n  {dest.host}:\n    username_env: DEST_USER\n    password_env: DEST_PASSWORD\n")

    p = subprocess.run(
        env.cli_args("--config", str(config), "--images", "tiny,pyish", dest=f"{dest.host}/{NAMESPACE}"),
        capture_output=True,
        text=True,
        env=env.cli_env({"DEST_USER": USER, "DEST_PASSWORD": "Wr0ng-dest-pa55word"}),
        timeout=120,
        check=False,
    )

    assert p.returncode == 1, p.stderr
    [line] = error_lines(p)
    assert line.startswith(f"error: destination {dest.host}/{NAMESPACE}: "), line
    assert f"credentials for {dest.host} were rejected" in line
    assert env.hub.manifest_gets() == 0 and env.hub.manifest_heads() == 0
    assert blob_files(dest) == 0
