"""Start-up time of the command line: ``hubmirror --help``, ``--version`` and a few sub-command helps.

    python bench/cli_startup.py            # 15 runs of each after 2 warm-ups
    python bench/cli_startup.py -n 30 --json

Each run is a fresh process (the ``hubmirror`` console script of the active environment), reaped with
``wait4``: wall time and CPU time (user + sys) per run; the table gives min / median / max. Goal
(issue 9): ``--help`` and ``--version`` under 0.3 s. On a shared, loaded machine quote the CPU time and
the median wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time

from _measure import byte_compile_hubmirror

CASES = [["--help"], ["--version"], ["version"], ["sync", "--help"], ["copy", "--help"]]


def run_once(argv: list[str]) -> tuple[float, float]:
    """(wall s, cpu s) of one run of *argv* with its output discarded."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        t0 = time.monotonic()
        pid = os.posix_spawn(
            argv[0],
            argv,
            os.environ,
            file_actions=[(os.POSIX_SPAWN_DUP2, devnull, 1), (os.POSIX_SPAWN_DUP2, devnull, 2)],
        )
        _, status, ru = os.wait4(pid, 0)
        wall = time.monotonic() - t0
    finally:
        os.close(devnull)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(argv)}: exit status {os.waitstatus_to_exitcode(status)}")
    return wall, ru.ru_utime + ru.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=15, help="counted runs per case")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--json", action="store_true", help="machine output on stdout")
    args = ap.parse_args()
    byte_compile_hubmirror()
    exe = shutil.which("hubmirror")
    if exe is None:
        raise SystemExit("no hubmirror on PATH: activate the project's virtualenv first")
    results = []
    for case in CASES:
        argv = [exe, *case]
        for _ in range(args.warmup):
            run_once(argv)
        walls, cpus = zip(*(run_once(argv) for _ in range(args.n)), strict=True)
        results.append(
            {
                "command": "hubmirror " + " ".join(case),
                "wall_s": {"min": min(walls), "median": statistics.median(walls), "max": max(walls)},
                "cpu_s": {"min": min(cpus), "median": statistics.median(cpus), "max": max(cpus)},
            }
        )
    if args.json:
        json.dump(results, sys.stdout, indent=2)
        print()
        return
    print(f"{'command':<28} {'wall min/median/max (s)':>26} {'cpu min/median/max (s)':>26}")
    for r in results:
        w, c = r["wall_s"], r["cpu_s"]
        print(
            f"{r['command']:<28} {w['min']:>8.3f} {w['median']:>8.3f} {w['max']:>8.3f} "
            f"{c['min']:>8.3f} {c['median']:>8.3f} {c['max']:>8.3f}"
        )


if __name__ == "__main__":
    main()
