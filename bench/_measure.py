"""Run a command and measure its own wall time, CPU time (user + system) and peak RSS.

A child forked from a large benchmark process inherits that process's RSS high-water mark in its
``ru_maxrss``; so the command is spawned from a tiny ``python -S`` launcher (about 8 MiB), which waits
for it with ``wait4`` and reports exit code, wall time and peak RSS.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

#: Runs argv[2:] (PATH lookup), waits with wait4, writes [exit code, wall s, peak RSS KiB, CPU s] to argv[1].
LAUNCHER = """
import json, os, sys, time
t0 = time.monotonic()
pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ)
_, status, ru = os.wait4(pid, 0)
wall = time.monotonic() - t0
with open(sys.argv[1], "w") as f:
    json.dump([os.waitstatus_to_exitcode(status), wall, ru.ru_maxrss, ru.ru_utime + ru.ru_stime], f)
"""


def byte_compile_hubmirror() -> None:
    """Byte-compile the hubmirror package, as ``pip install`` does for a regular install.

    An editable install (``pip install -e``, the dev setup) run with ``PYTHONDONTWRITEBYTECODE=1`` never
    writes ``__pycache__``: every start would compile ~60 modules from source (~0.15 s), a cost no user's
    installed copy pays. Stale files are harmless: Python checks each one against its source.
    """
    import compileall

    import hubmirror

    compileall.compile_dir(Path(hubmirror.__file__).parent, quiet=1)


@dataclass
class Measured:
    code: int
    wall_s: float
    peak_rss_mib: float
    cpu_s: float = 0.0  # user + system CPU seconds of the command (and its children it waited for)


def run_measured(
    cmd: Sequence[str],
    *,
    stdout: IO[bytes] | int | None = None,
    stderr: IO[bytes] | int | None = None,
    env: Mapping[str, str] | None = None,
) -> Measured:
    """Run *cmd* (its output to *stdout*/*stderr*) and return its exit code, wall time, peak RSS and CPU."""
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "rusage.json"
        launcher = [sys.executable, "-S", "-c", LAUNCHER, str(result), *cmd]
        subprocess.run(launcher, stdout=stdout, stderr=stderr, env=env, check=False)
        code, wall, maxrss_kib, cpu = json.loads(result.read_text())
    return Measured(code, wall, maxrss_kib / 1024, cpu)
