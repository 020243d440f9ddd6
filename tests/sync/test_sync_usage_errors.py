"""Input that silently meant "everything" or "wait forever", and settings that contradict each other
(issue 14, item 13), from the command line: each is refused before any work with one line naming the flag
or key. On the command line that is a usage error, exit 2 (as click answers an unknown flag); in a config
file, exit 1, as every other config-file error (``FILE:LINE: key: …``).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from test_sync_support import HUBMIRROR, Env, blob_files, catalog, env_fixture  # noqa: F401  (the `env` fixture)


def one_line(p: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    """Exit *code*, and stderr is one ``error:`` line holding every needle (no traceback, nothing else)."""
    assert p.returncode == code, (p.returncode, p.stderr)
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), p.stderr
    for needle in needles:
        assert needle in lines[0], (needle, p.stderr)
    return lines[0]


def nothing_done(env: Env) -> None:
    assert env.hub.manifest_gets() == 0 and env.hub.manifest_heads() == 0
    assert catalog(env.dest) == [] and blob_files(env.dest) == 0
    assert not env.state_path.exists()


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (("--images", ""), "option --images: '' names nothing"),
        (("--images", ",,,"), "option --images: ',,,' names nothing"),
        (("--images", " "), "option --images: ' ' names nothing"),
        (("--images", "tiny", "--platform", ""), "option --platform: '' names nothing"),
        (("--images", "tiny", "--wait", "--max-pulls", "0"), "option --max-pulls: 0 pulls while waiting"),
        (("--images", "tiny", "--signatures", "--no-signatures"), "option --signatures: give --signatures or"),
        (("--images", "tiny", "--windows", "--no-windows"), "option --windows: give --windows or"),
        (("--images", "tiny", "--keep", "3"), "option --keep: applies to the tags of --repo"),
        (("--images", "tiny", "--semver", ">=1"), "option --semver: applies to the tags of --repo"),
        (("--commit", "HEAD", "--list", "LIST"), "option --commit: picks a commit of the official-images library"),
        (("--images", "tiny", "--hub-rate", "inf"), "option --hub-rate: must be a finite number (got inf)"),
        (("--images", "tiny", "--hub-rate", "nan"), "option --hub-rate: must be a finite number (got nan)"),
        (("--images", "tiny", "--content-mirror", "DEST"), "option --content-mirror (value 1): the destination DEST"),
        (("--images", "tiny", "--metrics-port", "70000"), "option --metrics-port: must be ≤ 65535"),
        (("--images", "tiny", "--source", "127.0.0.1:70000"), "option --source: '127.0.0.1:70000': port 70000 is out"),
    ],
)
def test_a_flag_that_means_everything_forever_or_a_contradiction_is_a_usage_error(
    env: Env, args: tuple[str, ...], flag: str
) -> None:
    env.seed()
    listing = env.root / "images.list"
    listing.write_text("tiny:1.0\n")
    args = tuple(str(listing) if a == "LIST" else env.dest_prefix if a == "DEST" else a for a in args)

    p = env.cli(*args, timeout=30)  # before the fix --wait --max-pulls 0 waited for hours, silently

    one_line(p, 2, flag.replace("DEST", env.dest_prefix))
    nothing_done(env)


def test_a_destination_port_above_65535_is_one_line(env: Env) -> None:
    p = env.cli("--images", "tiny", dest="127.0.0.1:99999/mirror")

    one_line(p, 2, "option --dest: '127.0.0.1:99999': port 99999 is out of range (1-65535)")
    nothing_done(env)


def test_a_list_entry_with_a_port_above_65535_is_one_line_not_a_traceback(env: Env) -> None:
    env.seed()
    listing = env.root / "images.list"
    listing.write_text("tiny:1.0\n127.0.0.1:70000/team/app:1\n")

    p = env.cli("--list", str(listing))

    one_line(p, 1, f"{listing}:2", "port 70000 is out of range (1-65535)")
    assert catalog(env.dest) == []


def test_hubmirror_copy_with_a_port_above_65535_is_one_line(tmp_path: Path) -> None:
    p = subprocess.run(
        [HUBMIRROR, "copy", "127.0.0.1:70000/team/app:1", f"oci:{tmp_path}/out:1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    assert "port 70000 is out of range (1-65535)" in p.stderr


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("images: [tiny]\nhub_rate: .inf\n", "hubmirror.yaml:2: hub_rate: must be a finite number (got inf)"),
        ("images: [tiny]\nhub_rate: .nan\n", "hubmirror.yaml:2: hub_rate: must be a finite number (got nan)"),
        ("images: [tiny]\nkeep: 3\n", "hubmirror.yaml:2: keep: applies to the tags of --repo (repos:) only"),
        ("images: [tiny]\nmax_pulls: 0\nratelimit:\n  wait: true\n", "hubmirror.yaml:2: max_pulls: 0 pulls while"),
        ("dest: DEST\ncontent_mirrors: [DEST]\n", "hubmirror.yaml:2: content_mirrors[0]: the destination DEST is"),
        ("list: LIST\ncommit: HEAD\n", "hubmirror.yaml:2: commit: picks a commit of the official-images library"),
        ("images: [tiny]\ninsecure: ['127.0.0.1:70000']\n", "hubmirror.yaml:2: insecure[0]: '127.0.0.1:70000': port"),
    ],
)
def test_the_same_in_a_config_file_names_the_line_and_exits_1(env: Env, text: str, needle: str) -> None:
    env.seed()
    listing = env.root / "images.list"
    listing.write_text("tiny:1.0\n")
    config = env.root / "hubmirror.yaml"
    config.write_text(text.replace("DEST", env.dest_prefix).replace("LIST", str(listing)))

    args = env.cli_args("--config", str(config))
    if text.startswith("dest:"):  # the destination is the file's, not a flag's
        del args[args.index("--dest") : args.index("--dest") + 2]
    p = subprocess.run(args, capture_output=True, text=True, env=env.cli_env(), timeout=30, check=False)

    one_line(p, 1, needle.replace("hubmirror.yaml", str(config)).replace("DEST", env.dest_prefix))
    nothing_done(env)


def test_a_config_file_contradiction_undone_by_a_flag_is_no_error(env: Env) -> None:
    """`keep:` in the file with `--repo` on the command line: consistent once merged, so the run goes on."""
    env.seed()
    config = env.root / "hubmirror.yaml"
    config.write_text("keep: 1\n")

    p = env.cli("--config", str(config), "--repo", f"{env.hub.host}/library/tiny", "--dry-run")

    assert p.returncode == 0, p.stderr
