"""Every command's ``--help`` renders; ``hubmirror --help``/``--version`` start without the heavy imports.

The command tree is walked from the Typer app, so a new command or sub-command is covered without
touching this file.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from hubmirror import __version__
from hubmirror.cli import app


def _command_paths(cmd: object, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """The path of *cmd* and of every command under it (click groups have ``commands``)."""
    yield path
    subs: dict[str, object] = getattr(cmd, "commands", None) or {}
    for name, sub in subs.items():
        yield from _command_paths(sub, (*path, name))


COMMANDS = list(_command_paths(typer.main.get_command(app)))


def test_the_walk_finds_the_commands() -> None:
    names = {" ".join(p) for p in COMMANDS}
    assert {"", "copy", "sync", "status", "login", "version", "library stats", "library list"} <= names


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "hubmirror")
def test_every_command_help_renders(path: tuple[str, ...]) -> None:
    # issue 8, finding 8: `hubmirror copy --help` crashed (OS/ARCH[/VARIANT] read as rich markup).
    res = CliRunner().invoke(app, [*path, "--help"], terminal_width=100)
    assert res.exit_code == 0, f"hubmirror {' '.join(path)} --help: {res.output}\n{res.exception!r}"
    assert res.output.startswith("Usage: hubmirror"), res.output
    assert "Traceback" not in res.output


def test_copy_help_shows_the_platform_syntax() -> None:
    res = CliRunner().invoke(app, ["copy", "--help"], terminal_width=200)
    assert res.exit_code == 0 and "OS/ARCH[/VARIANT]" in res.output


@pytest.mark.parametrize("sub", ["stats", "list", "diff"])
def test_library_commands_name_the_repository_library_and_hide_the_old_source(sub: str) -> None:
    res = CliRunner().invoke(app, ["library", sub, "--help"], terminal_width=200)
    assert "--library" in res.output and "--source" not in res.output


def _run(*args: str, code: str = "from hubmirror.cli import main; main()") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60)


def test_version_flag_and_command() -> None:
    assert _run("--version").stdout == f"{__version__}\n"
    res = _run("version")
    assert res.returncode == 0 and res.stdout.strip() == __version__


HEAVY = ("aiohttp", "pydantic", "yaml", "asyncio", "rich.progress", "rich.table", "hubmirror.config", "hubmirror.sync")


def test_help_imports_none_of_the_heavy_modules() -> None:
    """``hubmirror --help`` (which builds every command) loads no aiohttp, pydantic or sync machinery: the
    start-up time budget (issue 9: < 0.3 s; measured by bench/cli_startup.py) depends on it."""
    code = (
        "import sys, json\n"
        "from hubmirror.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]), file=sys.stderr)\n"
    )
    for args in (("--help",), ("--version",)):
        res = _run(*args, code=code)
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stderr.strip().splitlines()[-1]) == [], f"hubmirror {' '.join(args)}"


def test_console_script_keeps_exit_codes_and_output_and_lets_a_profiler_write_its_file(tmp_path: Path) -> None:
    """The console script ends a finished command without the interpreter's teardown (`os._exit`): the
    exit code and everything printed must survive it, and a profiler around it must still get its file."""
    exe = str(Path(sys.executable).parent / "hubmirror")
    res = subprocess.run([exe, "sync", "--no-such-flag"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "No such option" in res.stderr
    res = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60)
    assert (res.returncode, res.stdout) == (0, f"{__version__}\n")
    res = subprocess.run([exe, "status", "--help"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.rstrip().endswith("Show this message and exit.")
    for args in (["--version"], ["status", "--help"]):
        prof = tmp_path / f"{args[0]}.prof"
        cmd = [sys.executable, "-m", "cProfile", "-o", str(prof), exe, *args]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert res.returncode == 0 and prof.stat().st_size > 0, res.stderr
