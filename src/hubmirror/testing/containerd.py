"""A real containerd for tests: Debian's daemon started with its own root, state and socket under a directory.

Used where a test needs a real consumer of what hubmirror writes (``ctr images pull --hosts-dir`` through
a drop-in mirror, ``ctr images import`` of an OCI layout). The CRI plugin is disabled; nothing outside the
directory is touched.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .._errors import HubmirrorError


@dataclass
class Containerd:
    """A running containerd; `ctr` runs the client against its socket (namespace ``hubmirror-test``)."""

    root: Path
    process: subprocess.Popen[bytes]
    sockets: Path  # a short directory: a unix socket path may not exceed 104 bytes

    @property
    def address(self) -> str:
        return str(self.sockets / "c.sock")

    def ctr(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ctr", "--address", self.address, "--namespace", "hubmirror-test", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def check(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """`ctr`, raising `AssertionError` with ctr's output when it fails."""
        p = self.ctr(*args, timeout=timeout)
        if p.returncode != 0:
            raise AssertionError(f"ctr {' '.join(args)} exited {p.returncode}: {p.stderr.strip() or p.stdout.strip()}")
        return p

    def import_layout(self, layout: Path, base_name: str) -> list[str]:
        """``ctr images import --no-unpack --all-platforms`` of an OCI image layout directory (packed as
        the tar ctr reads): each tag ``T`` of its ``index.json`` becomes image ``base_name:T``. Returns
        the names of all images now known."""
        archive = self.root / f"import-{time.monotonic_ns()}.tar"
        with tarfile.open(archive, "w") as tar:  # the whole directory, as `tar -C LAYOUT .` packs it
            for path in sorted(layout.rglob("*")):
                if path.is_file():
                    tar.add(path, arcname=str(path.relative_to(layout)))
        try:
            self.check("images", "import", "--no-unpack", "--all-platforms", "--base-name", base_name, str(archive))
        finally:
            archive.unlink()
        return sorted(self.check("images", "ls", "--quiet").stdout.split())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _config(root: Path, sockets: Path) -> str:
    return f"""version = 2
root = "{root / "root"}"
state = "{root / "state"}"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "{sockets / "c.sock"}"

[ttrpc]
  address = "{sockets / "c.sock.ttrpc"}"

[debug]
  address = ""

[metrics]
  address = ""
"""


@contextlib.contextmanager
def start_containerd(root: Path, *, timeout: float = 30) -> Iterator[Containerd]:
    """Start containerd under *root* and wait until it answers; stopped when the block ends.

    Raises `HubmirrorError` (with the daemon's last log lines) when it cannot start here."""
    root.mkdir(parents=True, exist_ok=True)
    config = root / "config.toml"
    sockets = Path(tempfile.mkdtemp(prefix="ctd-", dir="/tmp"))
    config.write_text(_config(root, sockets))
    log = (root / "containerd.log").open("wb")
    proc = subprocess.Popen(["containerd", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT)
    c = Containerd(root, proc, sockets)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = (root / "containerd.log").read_text(errors="replace").splitlines()[-5:]
                raise HubmirrorError("containerd did not start: " + " | ".join(tail))
            if Path(c.address).exists() and c.ctr("version", timeout=10).returncode == 0:
                break
            time.sleep(0.2)
        yield c
    finally:
        c.stop()
        log.close()
        shutil.rmtree(sockets, ignore_errors=True)
