"""The scripts a newcomer runs: `scripts/demo` installs only what the demo uses, `scripts/test` the rest.
Checked with `scripts/install --check` on a PATH that holds exactly the demo's tools (and a Python that can
import hubmirror but no test tool)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO_TOOLS = ("git", "docker-registry", "skopeo")


def _check(level: str, bin_dir: Path, python: Path) -> int:
    env = {"PATH": str(bin_dir), "VIRTUAL_ENV": str(python.parent.parent), "HOME": str(bin_dir)}
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "install"), "--check", level], env=env, capture_output=True, check=False
    ).returncode


@pytest.fixture
def demo_machine(tmp_path: Path) -> tuple[Path, Path]:
    """A PATH of the demo's tools only (stand-ins) and bash, and a 'virtualenv' whose Python imports
    hubmirror (this one's path) but not pytest."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("bash", "dirname", *DEMO_TOOLS):
        (bin_dir / name).symlink_to("/bin/true" if name in DEMO_TOOLS else shutil.which(name) or name)
    venv = tmp_path / "venv" / "bin"
    venv.mkdir(parents=True)
    src = ROOT / "src"
    (venv / "python").write_text(
        f'#!/bin/sh\n[ "$1" = -c ] && case "$2" in *pytest*) exit 1;; esac\n'
        f'PYTHONPATH={src} exec {sys.executable} "$@"\n'
    )
    (venv / "python").chmod(0o755)
    return bin_dir, venv / "python"


def test_the_demo_needs_only_git_docker_registry_skopeo_and_hubmirror(demo_machine: tuple[Path, Path]) -> None:
    bin_dir, python = demo_machine
    assert _check("demo", bin_dir, python) == 0  # nothing to install for the demo
    assert _check("dev", bin_dir, python) != 0  # the tests need more (chromium, containerd, pytest, …)
    for tool in DEMO_TOOLS:
        (bin_dir / tool).unlink()
        assert _check("demo", bin_dir, python) != 0, f"the demo's check does not notice a missing {tool}"
        (bin_dir / tool).symlink_to("/bin/true")


def test_scripts_test_points_the_history_tests_at_the_shared_bundle() -> None:
    text = (ROOT / "scripts" / "test").read_text()
    assert "shared/data/official-images-library.bundle" in text and "HUBMIRROR_LIBRARY_BUNDLE" in text
    assert os.access(ROOT / "scripts" / "test", os.X_OK)
