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


#: Runs several commands at once: argv[1] the result file, argv[2] a JSON list of [argv, stdout path, stderr
#: path]; spawns them all, waits for each with wait4; writes {"wall": s, "runs": [[code, wall, RSS KiB, CPU s]…]}.
LAUNCHER_ALL = """
import json, os, sys, time
t0 = time.monotonic()
pids = {}
for i, (argv, out, err) in enumerate(json.loads(sys.argv[2])):
    acts = [(os.POSIX_SPAWN_OPEN, 1, out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
            (os.POSIX_SPAWN_OPEN, 2, err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)]
    pids[os.posix_spawnp(argv[0], argv, os.environ, file_actions=acts)] = i
runs = [None] * len(pids)
while pids:
    pid, status, ru = os.wait4(-1, 0)
    if pid in pids:
        runs[pids.pop(pid)] = [os.waitstatus_to_exitcode(status), time.monotonic() - t0, ru.ru_maxrss,
                               ru.ru_utime + ru.ru_stime]
with open(sys.argv[1], "w") as f:
    json.dump({"wall": time.monotonic() - t0, "runs": runs}, f)
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


def run_measured_all(cmds: Sequence[tuple[Sequence[str], Path, Path]]) -> tuple[float, list[Measured]]:
    """Start every (command, stdout file, stderr file) of *cmds* at once and wait for all of them: the wall time
    from the first start to the last exit, and each command's exit code, wall time, peak RSS and CPU."""
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "rusage.json"
        spec = json.dumps([[list(cmd), str(out), str(err)] for cmd, out, err in cmds])
        subprocess.run([sys.executable, "-S", "-c", LAUNCHER_ALL, str(result), spec], check=False)
        got = json.loads(result.read_text())
    runs = [Measured(code, wall, rss / 1024, cpu) for code, wall, rss, cpu in got["runs"]]
    return float(got["wall"]), runs
