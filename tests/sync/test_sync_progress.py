"""``hubmirror sync``'s progress as a user sees it on a terminal: the command runs on a pseudo-terminal and
the bytes it draws are read back. The check phase has its own bar (tags checked of all), and each image's
bar gets a byte total once the copier knows its blob sizes (not ``0/?`` to the end). Off a terminal: no bars.
"""

from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import subprocess
import termios
import time

from test_sync_support import Env

ANSI = re.compile(r"\x1b(\[[0-9;?]*[A-Za-z]|\][^\x07]*\x07|[()][A-Z0-9])")
SIZE = r"\d+(?:\.\d+)? (?:bytes|kB|MB)"


def run_on_a_terminal(args: list[str], env: dict[str, str], timeout: float = 90) -> tuple[int, str]:
    """Run *args* with stdin, stdout and stderr on a pseudo-terminal (160 columns); what it drew, escapes
    removed, carriage returns as line ends."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
    environ = {**env, "TERM": "xterm-256color", "COLUMNS": "160"}
    environ.pop("NO_COLOR", None)
    proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=environ, close_fds=True)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the terminal's other side is closed
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    text = ANSI.sub("", b"".join(chunks).decode("utf-8", "replace"))
    return code, text.replace("\r\n", "\n").replace("\r", "\n")


def test_a_terminal_shows_the_check_phase_progress_and_byte_totals_per_image(env: Env) -> None:
    env.seed()
    assert env.cli("--images", "pyish,tiny").returncode == 0  # mirrored; then tiny is rebuilt upstream
    env.seed(repos=["tiny"], generation={"tiny": {"1.0": 1}}, layer_size=64 * 1024)
    env.hub.set_delay(1.0)  # each blob download holds a second: the image bars are drawn meanwhile
    # 3 requests a second to the Hub: the check's HEADs take a few seconds, as at Docker Hub's pace.
    code, screen = run_on_a_terminal(env.cli_args("--hub-rate", "3", "--images", "pyish,tiny"), env.cli_env())
    assert code == 0, screen
    tags = int(re.search(r"checking (\d+) tags \(manifest HEADs, free\)", screen).group(1))  # type: ignore[union-attr]
    checks = [(int(a), int(b)) for a, b in re.findall(r"checking tags\s.*?(\d+)/(\d+)", screen)]
    assert checks, screen
    assert {total for _, total in checks} == {tags}
    assert any(0 < done < tags for done, _ in checks), f"no partial check progress drawn: {checks}"
    # An image's bar: the bytes of its blobs at the destination, of their total (known from its manifests).
    bars = re.findall(rf"docker\.io/library/tiny:1\.0\s.*?({SIZE})/({SIZE})", screen)
    assert bars, screen
    assert any(total != "0 bytes" for _, total in bars)
    assert "copied" in screen and "exit 0" in screen


def test_off_a_terminal_no_bars_are_drawn(env: Env) -> None:
    env.seed(repos=["tiny"])
    p = env.cli("--images", "tiny")
    assert p.returncode == 0, p.stderr
    assert "checking 4 tags" in p.stderr
    assert "checking tags" not in p.stderr and "/?" not in p.stderr and "kB/" not in p.stderr
