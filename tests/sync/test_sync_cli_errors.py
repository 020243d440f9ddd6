"""Mistakes on the ``hubmirror sync`` command line get one clear line, exit status 1 and nothing written
(issue 8, findings 9 and 10): bad input files, output paths that cannot be written (checked before any
work), loose config types, and credentials the destination rejects.

The tests run as root, for whom permission bits do not stop a write: an unwritable output path is made
by putting it under a regular file.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from pathlib import Path

import pytest
from test_sync_support import NAMESPACE, Env, blob_files, catalog

from _auth import PASSWORD, USER
from hubmirror.service import SyncService


def one_error_line(p: subprocess.CompletedProcess[str], *needles: str) -> str:
    """The run failed with exit 1 and an ``error:`` line holding every needle, and no traceback."""
    assert p.returncode == 1, (p.returncode, p.stderr)
    assert "Traceback" not in p.stderr, p.stderr
    lines = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert lines, p.stderr
    text = " ".join(lines)
    for needle in needles:
        assert needle in text, (needle, p.stderr)
    return text


def nothing_done(env: Env) -> None:
    assert env.hub.manifest_gets() == 0
    assert catalog(env.dest) == [] and blob_files(env.dest) == 0


def test_list_file_with_non_utf8_bytes(env: Env) -> None:
    listing = env.root / "images.txt"
    listing.write_bytes(b"tiny:1.0\n# caf\xe9 \xff\xfe\n")

    p = env.cli("--list", str(listing))

    one_error_line(p, str(listing), "UTF-8", "line 2")
    nothing_done(env)


def test_state_under_a_regular_file(env: Env) -> None:
    env.seed()
    blocker = env.root / "not-a-dir"
    blocker.write_text("a file where a directory was meant\n")

    args = env.cli_args("--images", "tiny")
    args[args.index("--state") + 1] = str(blocker / "state.db")
    p = subprocess.run(args, capture_output=True, text=True, env=env.cli_env(), timeout=120, check=False)

    one_error_line(p, str(blocker / "state.db"), "not a directory")
    nothing_done(env)
    assert blocker.read_text() == "a file where a directory was meant\n"


@pytest.mark.parametrize("flag", ["--report", "--metrics-file"])
def test_output_file_that_cannot_be_written_is_refused_before_any_work(env: Env, flag: str) -> None:
    env.seed()
    blocker = env.root / "out"
    blocker.write_text("")
    target = blocker / "run.out"

    p = env.cli("--images", "tiny", flag, str(target))

    one_error_line(p, str(target), str(blocker), "not a directory")
    nothing_done(env)  # before: the destination was written, then the report write raised a traceback
    assert not env.state_path.exists()


def test_oci_destination_under_a_regular_file_is_refused_before_any_work(env: Env) -> None:
    env.seed()
    blocker = env.root / "layouts"
    blocker.write_text("")

    args = env.cli_args("--images", "tiny", dest=f"oci:{blocker}/mirror")
    p = subprocess.run(args, capture_output=True, text=True, env=env.cli_env(), timeout=120, check=False)

    one_error_line(p, f"oci:{blocker}/mirror", f"{blocker} is not a directory")
    assert env.hub.manifest_gets() == 0 and not env.state_path.exists()


def test_output_file_that_is_a_directory_is_refused(env: Env) -> None:
    env.seed()
    (env.root / "reports").mkdir()

    p = env.cli("--images", "tiny", "--report", str(env.root / "reports"))

    one_error_line(p, str(env.root / "reports"), "is a directory")
    nothing_done(env)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("concurrency: 2.0", "concurrency: expected a whole number, got a number 2.0"),
        ("prune: 'yes'", "prune: expected true or false, got text 'yes'"),
        ("images: 5", "images: expected a list"),
        ("include_tags: latest", "include_tags: expected a list"),
    ],
)
def test_loose_config_types_are_errors(env: Env, line: str, expected: str) -> None:
    env.seed()
    config = env.root / "hubmirror.yaml"
    config.write_text(f"windows: false\n{line}\n")

    p = env.cli("--config", str(config))

    one_error_line(p, f"{config}:2: {expected}")
    nothing_done(env)


def test_flags_still_merge_over_a_strict_config(env: Env) -> None:
    env.seed()
    config = env.root / "hubmirror.yaml"
    config.write_text("concurrency: 2\nprune: false\nimages: [pyish]\nplatforms: linux/amd64\n")

    p = env.cli("--config", str(config), "--images", "tiny", "--concurrency", "3", "--max-pulls", "50", "--dry-run")

    assert p.returncode == 0, p.stderr
    assert "tiny" in p.stderr and "pyish" not in p.stderr


def test_wrong_destination_password_names_registry_and_credential_source(env: Env) -> None:
    env.seed()
    dest = env.make_registry(username=USER, password=PASSWORD)
    config = env.root / "hubmirror.yaml"
    config.write_text(f"credentials:\n  {dest.host}:\n    username_env: DEST_USER\n    password_env: DEST_PASSWORD\n")
    wrong = "Wr0ng-dest-pa55word"

    args = env.cli_args("--config", str(config), "--images", "tiny", dest=f"{dest.host}/{NAMESPACE}")
    environ = env.cli_env({"DEST_USER": USER, "DEST_PASSWORD": wrong})
    p = subprocess.run(args, capture_output=True, text=True, env=environ, timeout=120, check=False)

    assert p.returncode == 1, p.stderr
    text = " ".join(p.stderr.split())
    assert f"credentials for {dest.host} were rejected" in text, text
    assert f"config credentials.{dest.host} (environment DEST_PASSWORD)" in text, text
    assert wrong not in p.stdout + p.stderr and PASSWORD not in p.stdout + p.stderr


def _processes_mentioning(text: str) -> list[str]:
    """Command lines of the live processes whose argv holds *text* (read from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            status = (entry / "status").read_text()
        except OSError:
            continue
        if "State:\tZ" in status:  # a zombie has exited already
            continue
        if any(text.encode() in a for a in argv):
            found.append(" ".join(a.decode("utf-8", "replace") for a in argv))
    return found


async def test_cancelling_a_run_mid_git_kills_git(env: Env) -> None:
    """Issue 8, finding 12: a cancelled run (a server's or daemon's loop goes on) left its git child
    running. The run is stopped in the middle of `git clone` from a server that never answers."""
    connected = asyncio.Event()

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connected.set()
        with contextlib.suppress(Exception):
            await reader.read()  # until git goes away
        writer.close()

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}/official-images.git"
    service = SyncService(cache_dir=env.cache)
    run = asyncio.create_task(service.run(env.config(library=url, images=["tiny"])))
    try:
        await asyncio.wait_for(connected.wait(), 60)
        assert any("clone" in p for p in _processes_mentioning(url))
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(run, 30)
        # The loop goes on (as in `serve`): git must be gone now, not when the loop closes.
        for _ in range(100):
            if not _processes_mentioning(url):
                break
            await asyncio.sleep(0.1)
        assert _processes_mentioning(url) == []
    finally:
        server.close()
