"""Benchmark of content mirrors (issue 7, item 7): a cold ``hubmirror sync`` of an official-like library
with a content mirror holding all of it, one holding half of it, and none.

Reuses bench/sync.py's synthetic library (`library_files`, `Builder`, `seed`) and its measuring
(`Bench.measure`: one subprocess per run, wall time and peak RSS from ``wait4``; Hub requests counted
by the emulator). The Hub emulator serves the library (rate limit off, so every request is counted);
a plain ``docker-registry`` plays mirror.gcr.io (``library/<name>``), seeded with all repositories or
with every other one. Each case syncs into a fresh destination with a fresh state.

Reported per case: wall time, Hub manifest GETs (pulls), HEADs and blob GETs, and per source of
content (the Hub and the mirror, from the run's report ``content_sources``) manifests and bytes served.

    python bench/mirrors.py [--repos 12] [--base-mib 1] [--layers-kib 16,96,256] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from _measure import byte_compile_hubmirror

from hubmirror.testing import images as img
from hubmirror.testing.hub import HubEmulator
from hubmirror.testing.registry import Registry
from sync import HUBMIRROR, NAMESPACE, Bench, Registries, Spec, seed, synthetic_library, verify

CASES = ("all", "half", "none")


def sync_cmd(work: Path, case: str, hub: HubEmulator, dest: Registry, mirror: Registry, library: Path) -> list[str]:
    cfg = work / f"hubmirror-{case}.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "library": str(library),
                "source": hub.host,
                "content_mirrors": [] if case == "none" else [mirror.host],
                "dest": f"{dest.host}/{NAMESPACE}",
                "state": str(work / f"state-{case}.db"),
                "windows": True,
            }
        )
    )
    return [HUBMIRROR, "sync", "--config", str(cfg), "--json", "--cache-dir", str(work / "cache")]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repos", type=int, default=12, help="repositories in the library (default 12)")
    ap.add_argument("--platforms", default="4-8", help="architectures per repository, MIN-MAX (default 4-8)")
    ap.add_argument("--base-mib", type=float, default=1.0, help="base layer size per (base, arch), ±40%% (1)")
    ap.add_argument("--layers-kib", default="16,96,256", help="per-image layer sizes in KiB, ±50%%")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    byte_compile_hubmirror()
    lo, _, hi = args.platforms.partition("-")
    spec = Spec(
        repos=args.repos,
        platforms=(int(lo), int(hi or lo)),
        base_mib=args.base_mib,
        layers_kib=tuple(int(x) for x in args.layers_kib.split(",")),
        seed=args.seed,
    )
    work = Path(tempfile.mkdtemp(prefix="hubmirror-bench-mirrors-"))
    registry = Registries(work)
    hub: HubEmulator | None = None
    try:
        t0 = time.monotonic()
        source = registry("hub-storage")
        hub = HubEmulator(source, limit=None).start()
        lib_path, library, builder, expected = synthetic_library(work, spec, source)
        names = sorted(library.repositories)
        mirrors = {"all": registry("mirror-all"), "half": registry("mirror-half")}
        img.run_sync(seed(mirrors["all"], library, builder))
        img.run_sync(seed(mirrors["half"], library, builder, repos=names[::2]))
        setup = {
            "repositories": len(names),
            "tags": len(expected),
            "distinct_top_manifests": len(set(expected.values())),
            "blobs": len(builder.sizes),
            "blob_mib": round(sum(builder.sizes.values()) / (1 << 20), 1),
            "half_mirror_repositories": len(names[::2]),
            "seed_s": round(time.monotonic() - t0, 1),
        }
        print(f"library: {json.dumps(setup)}", file=sys.stderr)
        bench = Bench(work, hub, source, builder)
        results: list[dict[str, Any]] = []
        for case in CASES:
            dest = registry(f"dest-{case}")
            mirror = mirrors.get(case, mirrors["all"])
            run = bench.measure("hubmirror", case, sync_cmd(work, case, hub, dest, mirror, lib_path), dest)
            verify(run, dest, f"{NAMESPACE}/", expected)
            try:
                report = json.loads((work / f"hubmirror-{case}.out").read_text())
            except (OSError, ValueError):
                report = {}
            per_source = {
                ("hub" if s["role"] == "source" else "mirror"): {
                    "manifests": s["manifests"],
                    "mib": round(s["bytes"] / (1 << 20), 1),
                    "mismatches": s["mismatches"],
                }
                for s in report.get("content_sources", [])
            }
            results.append(
                {
                    "case": f"mirror holds {case}" if case != "none" else "no mirror",
                    "wall_s": run.wall_s,
                    "hub_pulls": run.manifest_gets,
                    "hub_heads": run.manifest_heads,
                    "hub_blob_gets": run.blob_gets,
                    "sources": per_source,
                    "exit": run.exit_code,
                    "digests_ok": run.digests_ok,
                }
            )
        if args.json:
            print(json.dumps({"setup": setup, "results": results}, indent=2))
        else:
            print(f"\nsynthetic library: {json.dumps(setup)}\n")
            print(_table(results))
        return 0 if all(r["exit"] == 0 and r["digests_ok"] for r in results) else 1
    finally:
        if hub is not None:
            hub.stop()
        registry.stop()
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def _table(results: list[dict[str, Any]]) -> str:
    cols = ("case", "wall s", "Hub pulls", "Hub HEADs", "Hub blob GETs", "Hub MiB", "mirror mf", "mirror MiB", "ok")
    rows = []
    for r in results:
        hub, mirror = r["sources"].get("hub", {}), r["sources"].get("mirror", {})
        rows.append(
            (
                r["case"],
                f"{r['wall_s']:.2f}",
                str(r["hub_pulls"]),
                str(r["hub_heads"]),
                str(r["hub_blob_gets"]),
                str(hub.get("mib", "-")),
                str(mirror.get("manifests", "-")),
                str(mirror.get("mib", "-")),
                "ok" if r["exit"] == 0 and r["digests_ok"] else "FAIL",
            )
        )
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
             for row in [cols, *rows]]  # fmt: skip
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
