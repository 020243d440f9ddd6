"""Benchmark of ``hubmirror sync`` workers on a PostgreSQL state (issue 15, item 6): 1, 2 and 4 worker
processes on one Hub-shaped set, against one process on a SQLite state.

Reuses bench/sync.py's synthetic library (official-like indexes, 8 platforms and an attestation each by
default, shared tags, base layers shared across repositories), seeded into a ``docker-registry`` served
through the Hub emulator (rate limit off: every manifest GET is counted), and its measuring. A real
PostgreSQL server is started (`hubmirror.testing.postgres`). Each case runs on a fresh destination registry
and a fresh state (a new SQLite file, a new PostgreSQL database): a cold sync, then a no-op rerun.

Cases: SQLite with one process; PostgreSQL with 1, 2 and 4 ``hubmirror sync`` processes started at once with
the same config and ``--state postgresql://…``. Per case: wall time (first start to last exit), CPU of the
processes (user + system), manifest GETs at the emulator against the minimum (each distinct manifest of the
selection once per repository), blob uploads and mounts (the workers' reports, ``blobs_copied`` +
``blobs_mounted``) against the unique (repository, blob) pairs, and whether every destination tag has the
source's digest.

This 2-vCPU machine drifts by ±25 % within minutes, so ``--rounds`` rounds are taken, and in each round the
SQLite and the one-worker PostgreSQL runs go in turn (cold, then ``--noop-runs`` no-op pairs; which goes
first alternates by round): the PostgreSQL/SQLite figures are the medians of the pairs' ratios.

    python bench/workers.py [--repos 12] [--rounds 3] [--noop-runs 3] [--json]

Goal (issue 15): PostgreSQL with one worker within 1.2x SQLite's wall time, cold and no-op.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from _measure import byte_compile_hubmirror, run_measured_all

from hubmirror.library import Library
from hubmirror.testing.hub import HubEmulator
from hubmirror.testing.postgres import PostgresServer, start_postgres
from hubmirror.testing.registry import Registry
from sync import HUBMIRROR, NAMESPACE, Builder, Registries, Run, Spec, synthetic_library, verify

#: (case name, state backend, worker processes)
CASES = (("SQLite, 1 process", "sqlite", 1), *((f"PostgreSQL, {n} worker{'s' * (n > 1)}", "pg", n) for n in (1, 2, 4)))
SQLITE, PG1 = CASES[0][0], CASES[1][0]
GOAL = 1.2


@dataclass
class Result:
    """One measured run of a case: its processes started at once."""

    case: str
    kind: str  # "cold" or "noop"
    round: int
    wall_s: float
    cpu_s: float
    exit_codes: list[int]
    manifest_gets: int
    uploads: int | None  # blobs_copied + blobs_mounted over the workers' reports
    tags_ok: bool | None
    mounted: int = 0  # of the uploads, cross-repository mounts
    mib: float = 0.0  # blob bytes uploaded (the reports' ``bytes``), MiB
    repos_by_worker: list[int] = field(default_factory=list)  # repositories each worker copied into

    @property
    def ok(self) -> bool:
        return all(c == 0 for c in self.exit_codes) and bool(self.tags_ok)


def minimum(library: Library, builder: Builder) -> tuple[int, int]:
    """(distinct (repository, manifest) pairs of the selection: the fewest manifest GETs; unique (repository,
    blob) pairs the destination holds: the fewest blob uploads and mounts)."""
    manifests: set[tuple[str, str]] = set()
    blobs: set[tuple[str, str]] = set()
    for name, repo in library.repositories.items():
        for ix in builder.repository_indexes(repo, {}).values():
            manifests.add((name, ix.digest))
            manifests.update((name, d) for d in ix.child_digests)
            blobs.update((name, d) for d in ix.blob_digests)
    return len(manifests), len(blobs)


class Bench:
    def __init__(
        self, work: Path, hub: HubEmulator, registries: Registries, pg: PostgresServer, lib: Path, args: Any
    ) -> None:
        self.work, self.hub, self.registries, self.pg, self.lib, self.args = work, hub, registries, pg, lib, args
        self.results: list[Result] = []
        self.expected: dict[str, str] = {}
        self._n = 0

    def new_target(self, backend: str) -> tuple[Registry, str]:
        """A fresh destination registry and a fresh state (SQLite file or PostgreSQL database)."""
        self._n += 1
        dest = self.registries(f"dest-{self._n}")
        where = self.pg.new_database() if backend == "pg" else str(self.work / f"state-{self._n}.db")
        return dest, where

    def config(self, dest: Registry) -> Path:
        cfg = self.work / f"config-{dest.port}.yaml"
        cfg.write_text(
            yaml.safe_dump(
                {
                    "library": str(self.lib),
                    "source": self.hub.host,
                    "dest": f"{dest.host}/{NAMESPACE}",
                    "windows": True,  # indexes verbatim: every platform and attestation
                    "concurrency": self.args.concurrency,
                    "blob_concurrency": self.args.blob_concurrency,
                }
            )
        )
        return cfg

    def run(
        self, case: str, kind: str, rnd: int, dest: Registry, where: str, workers: int, profile: Path | None = None
    ) -> Result:
        """One run of *case*: its *workers* processes started at once (*profile*: the one process under
        cProfile, stats into that file; the run is then left out of the results)."""
        cfg = self.config(dest)
        tag = f"{self._n}-{kind}-{rnd}-{workers}"
        cmds = []
        for i in range(workers):
            report = self.work / f"report-{tag}-{i}.json"
            report.unlink(missing_ok=True)
            argv = [HUBMIRROR, "sync", "--config", str(cfg), "--state", where, "--report", str(report)]
            argv += ["--cache-dir", str(self.work / "cache")]
            if profile is not None:
                argv = [sys.executable, "-m", "cProfile", "-o", str(profile), *argv]
            cmds.append((argv, self.work / f"log-{tag}-{i}.out", self.work / f"log-{tag}-{i}.err"))
        gets = self.hub.manifest_gets()
        wall, runs = run_measured_all(cmds)
        reports = []
        for i in range(workers):
            with contextlib.suppress(OSError, ValueError):
                reports.append(json.loads((self.work / f"report-{tag}-{i}.json").read_text()))
        uploads = (
            sum(int(r["totals"]["blobs_copied"]) + int(r["totals"]["blobs_mounted"]) for r in reports)
            if len(reports) == workers
            else None
        )
        mounted = sum(int(r["totals"]["blobs_mounted"]) for r in reports)
        mib = round(sum(float(r["totals"]["bytes"]) for r in reports) / (1 << 20), 1)
        spread = [len({i["dest"] for i in r["items"] if i["outcome"] == "copied"}) for r in reports]
        probe = Run("hubmirror", kind, wall, 0.0, 0)
        verify(probe, dest, f"{NAMESPACE}/", self.expected)
        res = Result(
            case, kind, rnd, round(wall, 2), round(sum(m.cpu_s for m in runs), 2), [m.code for m in runs],
            self.hub.manifest_gets() - gets, uploads, probe.digests_ok, mounted, mib, spread,
        )  # fmt: skip
        for i, m in enumerate(runs):
            if m.code != 0:
                tail = Path(cmds[i][2]).read_text(errors="replace")[-1500:]
                print(f"!! {case} {kind}: worker {i} exited {m.code}:\n{tail}", file=sys.stderr)
        print(
            f"   round {rnd} {case:26} {kind:4} {res.wall_s:6.2f} s  CPU {res.cpu_s:6.2f} s  "
            f"GETs {res.manifest_gets:4}  uploads {res.uploads}  {'ok' if res.ok else 'FAIL'}",
            file=sys.stderr,
        )
        if profile is None:
            self.results.append(res)
        return res


def measure(bench: Bench, rounds: int, noop_runs: int) -> None:
    """Each round: the SQLite and one-worker PostgreSQL cases in turn (cold, then the no-op pairs; which goes
    first alternates), then 2 and 4 workers (cold, then no-op runs); every case on fresh destinations."""
    for rnd in range(rounds):
        pair = [CASES[0], CASES[1]] if rnd % 2 == 0 else [CASES[1], CASES[0]]
        targets = {name: bench.new_target(backend) for name, backend, _ in pair}
        for name, _, n in pair:
            bench.run(name, "cold", rnd, *targets[name], n)
        for k in range(noop_runs):
            for name, _, n in pair if k % 2 == 0 else pair[::-1]:
                bench.run(name, "noop", rnd, *targets[name], n)
        for name, backend, n in CASES[2:]:
            dest, where = bench.new_target(backend)
            bench.run(name, "cold", rnd, dest, where, n)
            for _ in range(noop_runs):
                bench.run(name, "noop", rnd, dest, where, n)
            targets[name] = (dest, where)
        for dest, _ in targets.values():  # free the disk: the next round starts from fresh destinations
            dest.stop()
            shutil.rmtree(dest.root, ignore_errors=True)


def profile(bench: Bench, out: Path) -> None:
    """A SQLite and a one-worker PostgreSQL case, each on fresh destinations, run under cProfile: stats into
    *out*/{sqlite,pg1}-{cold,noop}.prof (read with ``python -m pstats``)."""
    out.mkdir(parents=True, exist_ok=True)
    for (name, backend, n), short in zip(CASES[:2], ("sqlite", "pg1"), strict=True):
        dest, where = bench.new_target(backend)
        for kind in ("cold", "noop"):
            bench.run(name, kind, -1, dest, where, n, profile=out / f"{short}-{kind}.prof")


def paired(results: list[Result], kind: str, what: str = "wall_s") -> list[float]:
    """PostgreSQL-1-worker / SQLite ratios of *what* (``wall_s``, ``cpu_s``) of the runs of *kind* taken in turn
    (same round, same index)."""
    out = []
    for rnd in sorted({r.round for r in results}):
        sq = [getattr(r, what) for r in results if (r.case, r.kind, r.round) == (SQLITE, kind, rnd)]
        pg = [getattr(r, what) for r in results if (r.case, r.kind, r.round) == (PG1, kind, rnd)]
        out += [p / s for p, s in zip(pg, sq, strict=False) if s]
    return out


def _spread(values: list[float], fmt: str = "{:.2f}") -> str:
    """The median of *values*, and their range when there are several."""
    med, lo, hi = (fmt.format(v) for v in (statistics.median(values), min(values), max(values)))
    return med if len(values) == 1 else f"{med} ({lo}–{hi})"


def table(results: list[Result], min_gets: int, min_uploads: int) -> str:
    cols = (
        "case", "run", "n", "wall s, median (range)", "CPU s, median (range)",
        "manifest GETs / min", "blob uploads+mounts / unique", "of them mounts", "MiB uploaded", "repos per worker",
        "tags",
    )  # fmt: skip
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for name, _, _ in CASES:
        for kind in ("cold", "noop"):
            rs = [r for r in results if (r.case, r.kind) == (name, kind)]
            if not rs:
                continue
            mins = (min_gets, min_uploads) if kind == "cold" else (0, 0)
            gets = sorted({r.manifest_gets for r in rs})
            ups = sorted({-1 if r.uploads is None else r.uploads for r in rs})
            spread = "; ".join(sorted({"/".join(map(str, sorted(r.repos_by_worker, reverse=True))) for r in rs}))
            cells = (
                name, kind, str(len(rs)), _spread([r.wall_s for r in rs]), _spread([r.cpu_s for r in rs]),
                f"{'/'.join(map(str, gets))} / {mins[0]}", f"{'/'.join(map(str, ups))} / {mins[1]}",
                "/".join(map(str, sorted({r.mounted for r in rs}))), _spread([r.mib for r in rs], "{:.1f}"),
                spread if kind == "cold" else "–",
                "all right" if all(r.ok for r in rs) else f"{sum(not r.ok for r in rs)} FAILED",
            )  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repos", type=int, default=12, help="repositories in the library (default 12)")
    ap.add_argument("--entries", default="2-6", help="entries per repository, MIN-MAX (default 2-6)")
    ap.add_argument("--platforms", default="8-8", help="architectures per repository, MIN-MAX (default 8-8)")
    ap.add_argument("--base-mib", type=float, default=0.25, help="base layer size per (base, arch), ±40%% (0.25)")
    ap.add_argument("--layers-kib", default="8,32,96", help="per-image layer sizes in KiB, ±50%%")
    ap.add_argument("--concurrency", type=int, default=8, help="images in parallel per process (default 8)")
    ap.add_argument("--blob-concurrency", type=int, default=4, help="blob transfers in parallel (default 4)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of every case (default 3)")
    ap.add_argument("--noop-runs", type=int, default=3, help="no-op runs per case and round (default 3)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--cprofile",
        type=Path,
        metavar="DIR",
        help="then a SQLite and a PostgreSQL one-worker case (cold, no-op) under cProfile, into DIR/*.prof",
    )
    ap.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, reports)")
    args = ap.parse_args()
    byte_compile_hubmirror()
    lo, _, hi = args.entries.partition("-")
    plo, _, phi = args.platforms.partition("-")
    spec = Spec(
        repos=args.repos,
        entries=(int(lo), int(hi or lo)),
        platforms=(int(plo), int(phi or plo)),
        base_mib=args.base_mib,
        layers_kib=tuple(int(x) for x in args.layers_kib.split(",")),
        seed=args.seed,
    )
    work = Path(tempfile.mkdtemp(prefix="hubmirror-bench-workers-"))
    registries = Registries(work)
    hub: HubEmulator | None = None
    try:
        with start_postgres(work / "pg") as pg:
            t0 = time.monotonic()
            source = registries("hub-storage")
            hub = HubEmulator(source, limit=None).start()
            lib_path, library, builder, expected = synthetic_library(work, spec, source)
            min_gets, min_uploads = minimum(library, builder)
            setup = {
                "repositories": len(library.repositories),
                "tags": len(expected),
                "distinct_top_manifests": len(set(expected.values())),
                "manifests_min_gets": min_gets,
                "repo_blob_pairs": min_uploads,
                "blobs": len(builder.sizes),
                "blob_mib": round(sum(builder.sizes.values()) / (1 << 20), 1),
                "seed_s": round(time.monotonic() - t0, 1),
                "rounds": args.rounds,
                "noop_runs": args.noop_runs,
            }
            print(f"library: {json.dumps(setup)}", file=sys.stderr)
            bench = Bench(work, hub, registries, pg, lib_path, args)
            bench.expected = expected
            measure(bench, args.rounds, args.noop_runs)
            if args.cprofile is not None:
                profile(bench, args.cprofile)
        results = bench.results
        ratios = {kind: paired(results, kind) for kind in ("cold", "noop")}
        cpu = {kind: paired(results, kind, "cpu_s") for kind in ("cold", "noop")}
        summary = {k: round(statistics.median(v), 3) if v else None for k, v in ratios.items()}
        goals = {k: v is not None and v <= GOAL for k, v in summary.items()}
        if args.json:
            out = {
                "setup": setup,
                "results": [r.__dict__ for r in results],
                "pg1_vs_sqlite": {
                    k: {"median": summary[k], "pairs": [round(x, 3) for x in v]} for k, v in ratios.items()
                },
                "pg1_vs_sqlite_cpu": {k: [round(x, 3) for x in v] for k, v in cpu.items()},
                "goals": goals,
            }
            print(json.dumps(out, indent=2))
        else:
            print(f"\nsynthetic library: {json.dumps(setup)}\n")
            print(table(results, min_gets, min_uploads))
            print()
            for kind, v in ratios.items():
                if v:
                    print(
                        f"PostgreSQL 1 worker / SQLite wall, {kind}: median {summary[kind]:.3f}x of {len(v)} pairs "
                        f"(range {min(v):.3f}–{max(v):.3f}x); goal <= {GOAL}x {'met' if goals[kind] else 'MISSED'}"
                    )
                    c = cpu[kind]
                    print(
                        f"PostgreSQL 1 worker / SQLite CPU, {kind}: median {statistics.median(c):.3f}x "
                        f"(range {min(c):.3f}–{max(c):.3f}x)"
                    )
        return 0 if all(r.ok for r in results) else 1
    finally:
        if hub is not None:
            hub.stop()
        registries.stop()
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
