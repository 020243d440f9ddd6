"""A real PostgreSQL server for tests: Debian's ``postgresql`` binaries, ``initdb`` in a temporary folder (as the
``postgres`` user when running as root, since PostgreSQL refuses to run as root), listening on loopback at a
free port with password (SCRAM) authentication, stopped at the end."""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .._errors import HubmirrorError

#: The superuser the tests connect as.
USER = "hubmirror"


def _bindir() -> Path | None:
    """Where ``initdb`` and ``postgres`` are: on PATH, or Debian's ``/usr/lib/postgresql/N/bin``."""
    found = shutil.which("initdb")
    if found is not None and shutil.which("postgres") is not None:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(versions[-1]).parent if versions else None


def available() -> str | None:
    """None if a server can be started here, else why not."""
    if _bindir() is None:
        return "PostgreSQL is not installed (scripts/install installs Debian's postgresql)"
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        return "running as root without setpriv: cannot start PostgreSQL as another user"
    return None


@dataclass
class PostgresServer:
    """A running server: `url` of a fresh database with `new_database`, `restart` to test reconnection."""

    root: Path
    port: int
    password: str = field(repr=False)
    process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def url(self, database: str = "postgres", *, password: bool = True) -> str:
        """``postgresql://hubmirror[:PASSWORD]@127.0.0.1:PORT/DATABASE``."""
        secret = f":{self.password}" if password else ""
        return f"postgresql://{USER}{secret}@{self.host}:{self.port}/{database}"

    def new_database(self) -> str:
        """Create an empty database; returns its URL (with the password)."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def psql(self, sql: str, database: str = "postgres") -> str:
        out = subprocess.run(
            ["psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", self.url(database), "-c", sql],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if out.returncode != 0:
            raise HubmirrorError(f"psql failed: {out.stderr.strip()}")
        return out.stdout.strip()

    def start(self) -> None:
        bindir = _bindir()
        assert bindir is not None
        data = self.root / "data"
        self.process = subprocess.Popen(
            [
                *_as_postgres(),
                str(bindir / "postgres"),
                "-D",
                str(data),
                "-p",
                str(self.port),
                "-k",
                str(self.root),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=200",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(self.root / "server.log", "ab"),  # noqa: SIM115 - the server owns it
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = (self.root / "server.log").read_text(errors="replace")[-2000:]
                raise HubmirrorError(f"PostgreSQL exited at start: {log}")
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), timeout=0.2):
                if self._ready():
                    return
            time.sleep(0.1)
        raise HubmirrorError("PostgreSQL did not start within 30 s")

    def _ready(self) -> bool:
        try:
            self.psql("SELECT 1")
        except HubmirrorError:
            return False
        return True

    def stop(self, *, fast: bool = True) -> None:
        """Stop the server (SIGINT: fast shutdown, or SIGKILL with *fast* False)."""
        if self.process is None:
            return
        if fast:
            self.process.send_signal(2)
        else:
            self.process.kill()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


def _as_postgres() -> list[str]:
    """The command prefix that runs a program as the ``postgres`` user when we are root."""
    # setpriv execs the program itself (no parent in between), so signals reach the server directly.
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"] if os.geteuid() == 0 else []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def start_postgres(root: Path) -> Iterator[PostgresServer]:
    """``initdb`` a cluster in *root* and run it until the block ends. As root, the cluster goes into a new
    folder under the system's temporary directory instead (the ``postgres`` user cannot enter pytest's)."""
    why = available()
    if why is not None:
        raise HubmirrorError(why)
    bindir = _bindir()
    assert bindir is not None
    own = os.geteuid() == 0
    root = Path(tempfile.mkdtemp(prefix="hubmirror-pg-")) if own else root
    root.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(16)
    pwfile = root / "pwfile"
    pwfile.write_text(password + "\n")
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(pwfile, "postgres")
        os.chmod(root, 0o700)
    subprocess.run(
        [
            *_as_postgres(),
            str(bindir / "initdb"),
            "-D",
            str(root / "data"),
            "-U",
            USER,
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            f"--pwfile={pwfile}",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    server = PostgresServer(root, _free_port(), password)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        if own:
            shutil.rmtree(root, ignore_errors=True)


__all__ = ["USER", "PostgresServer", "available", "start_postgres"]
