"""Running a deployment's commands the way it runs them: as a non-root user, with its environment, with the
hubmirror of this test run on PATH (the deployment's own install step aside)."""

from __future__ import annotations

import importlib.metadata
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

import hubmirror
from hubmirror.config import parse_config

if TYPE_CHECKING:
    from test_sync_support import Env

    from hubmirror.testing.postgres import PostgresServer

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
NOBODY = 65534


@dataclass
class User:
    """Who runs a deployment's commands: `uid` (nobody when the tests run as root, else the current user),
    a `home` it owns, and `bin` (a directory it can run this test run's ``hubmirror`` from)."""

    uid: int
    gid: int
    root: Path  # a directory the user owns, for everything the deployment writes
    home: Path
    bin: Path

    def prefix(self) -> list[str]:
        """The argv prefix that drops to the user (empty when the tests already run as non-root)."""
        if self.uid == os.geteuid():
            return []
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups", "--"]

    def run(
        self, argv: Sequence[str], *, env: Mapping[str, str], cwd: Path, timeout: float = 180, **kw: object
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # type: ignore[call-overload,no-any-return]
            [*self.prefix(), *argv], env=dict(env), cwd=cwd, capture_output=True, text=True, timeout=timeout, **kw
        )

    def own(self, *paths: Path) -> None:
        """Give *paths* (recursively) to the user."""
        if self.uid == os.geteuid():
            return
        for path in paths:
            for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
                os.lchown(p, self.uid, self.gid)

    def base_env(self) -> dict[str, str]:
        """A clean environment as a fresh runner or service has: PATH with hubmirror, HOME, LANG."""
        return {
            "PATH": f"{self.bin}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.home),
            "LANG": "C.UTF-8",
            "COLUMNS": "200",
        }


def _launcher(bin_dir: Path, can_run: bool) -> None:
    """``bin_dir/hubmirror``: this test run's hubmirror. When the non-root user cannot run this interpreter
    (a virtualenv whose Python lives under /root), the same site-packages under the system's Python of the same
    version (its compiled extensions share the ABI)."""
    target = bin_dir / "hubmirror"
    if can_run:
        target.symlink_to(Path(sys.executable).with_name("hubmirror"))
        return
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    system = shutil.which(version, path="/usr/bin:/usr/local/bin:/bin")
    if system is None:
        pytest.skip(f"the non-root user cannot run {sys.executable}, and there is no /usr/bin/{version}")
    site = sysconfig.get_paths()["purelib"]
    if not _readable_by_others(Path(site)) or not _readable_by_others(Path(hubmirror.__file__).parent):
        site = str(_copy_runtime(bin_dir.parent / "site-packages"))  # a clone under a private directory
    target.write_text(
        f"#!{system} -sS\nimport site\nsite.addsitedir({site!r})\nfrom hubmirror.cli import console\nconsole()\n"
    )
    target.chmod(0o755)


def _readable_by_others(path: Path) -> bool:
    """Whether every directory from / to *path* lets others in (mode o+x)."""
    return all(p.stat().st_mode & 0o001 for p in [path, *path.parents])


def _copy_runtime(dest: Path) -> Path:
    """hubmirror and its runtime dependencies (not the dev ones), copied where the non-root user can read them."""
    dest.mkdir()
    shutil.copytree(Path(hubmirror.__file__).parent, dest / "hubmirror")
    todo, seen = ["hubmirror"], set()
    while todo:
        name = re.split(r"[ ;<>=!~\[]", todo.pop(), maxsplit=1)[0].lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:  # another platform's (colorama on Windows)
            continue
        for req in dist.requires or []:
            if "extra ==" not in req:
                todo.append(req)
        if name == "hubmirror":
            continue
        for f in dist.files or []:
            src = Path(str(f.locate()))
            if src.is_file() and not str(f).startswith(".."):
                (dest / f).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest / f)
    return dest


@contextmanager
def non_root_user() -> Iterator[User]:
    """A `User`: nobody (with a root directory, a home and a bin it owns) when the tests run as root."""
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is needed to drop to a non-root user")
    uid, gid = (NOBODY, NOBODY) if os.geteuid() == 0 else (os.geteuid(), os.getegid())
    root = Path(tempfile.mkdtemp(prefix="hubmirror-deploy-", dir="/tmp"))  # pytest's tmp_path is root-only
    try:
        home, bin_dir = root / "home", root / "bin"
        home.mkdir()
        bin_dir.mkdir()
        # As a deployment's shell starts it (bash checks every directory of the interpreter's path itself).
        probe = ["bash", "-c", f"{shlex.quote(str(Path(sys.executable).with_name('hubmirror')))} --version"]
        user = User(uid, gid, root, home, bin_dir)
        root.chmod(0o755)
        can_run = subprocess.run([*user.prefix(), *probe], capture_output=True, check=False).returncode == 0
        _launcher(bin_dir, can_run)
        user.own(root)
        yield user
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def as_user() -> Iterator[User]:
    with non_root_user() as user:
        yield user


def emulated_config(text: str, env: Env, postgres: PostgresServer, database: str, images: Sequence[str]) -> str:
    """A shipped scale-out config (*text*) as a test runs it: its PostgreSQL (a Service or a compose service)
    replaced by the tests' server and *database*, the Hub, library and destination by the emulator's, and
    *images* selected."""
    url = str(parse_config(text).state)
    local = url[: url.index("@") + 1] + f"{postgres.host}:{postgres.port}/{database}"
    data = yaml.safe_load(text.replace(url, local))
    data.update(
        {
            "library": str(env.library_repo),
            "source": env.hub.host,
            "dest": env.dest_prefix,
            "insecure": [env.dest.host],
            "images": list(images),
        }
    )
    return yaml.safe_dump(data)


def without_docker_credentials(env: Env) -> dict[str, str]:
    """What only a test adds to a container's environment: no Docker credentials of the machine running it."""
    return {"DOCKER_CONFIG": str(env.root / "no-docker-config"), "REGISTRY_AUTH_FILE": str(env.root / "no-auth.json")}
