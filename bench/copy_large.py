"""Benchmark: copy a 1 GiB single-layer image between two local registries with ``hubmirror copy``.

Builds the image (one streamed random layer, never held in memory) in a fresh ``docker-registry``,
runs ``hubmirror copy`` in a subprocess to a second registry (or an OCI layout with ``--to oci``),
and reports wall time, throughput and the copier process's own peak RSS (see ``_measure``).
Goal: peak RSS < 150 MB, independent of the blob size.

    python bench/copy_large.py [--size-mib 1024] [--to registry|oci] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _measure import byte_compile_hubmirror, run_measured

from hubmirror.testing.images import image, push, streamed_layer
from hubmirror.testing.registry import start_registry

HUBMIRROR = str(Path(sys.executable).parent / "hubmirror")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=1024, help="layer size in MiB (default 1024)")
    ap.add_argument("--to", choices=("registry", "oci"), default="registry", help="destination kind")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    byte_compile_hubmirror()

    work = Path(tempfile.mkdtemp(prefix="hubmirror-bench-"))
    src = dst = None
    try:
        src = start_registry(work / "src")
        size = args.size_mib * 1024 * 1024
        t0 = time.monotonic()
        big = streamed_layer("bench-large", size)
        img = image("bench-large", layers=[big])
        asyncio.run(push(src, "bench/large", img, ["1"]))
        print(f"built and pushed {args.size_mib} MiB layer in {time.monotonic() - t0:.1f} s", file=sys.stderr)

        if args.to == "registry":
            dst = start_registry(work / "dst")
            target = f"{dst.host}/bench/large:1"
        else:
            target = f"oci:{work / 'layout'}:1"
        cmd = [HUBMIRROR, "copy", "--json", f"{src.host}/bench/large:1", target]
        with (work / "copy.out").open("w+b") as out, (work / "copy.err").open("w+b") as err:
            run = run_measured(cmd, stdout=out, stderr=err)
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read(), err.read()
        wall = run.wall_s
        if run.code != 0:
            print(stderr.decode(errors="replace"), file=sys.stderr)
            return 1
        result = json.loads(stdout)
        assert result["digest"] == img.digest, "destination digest differs"
        peak_mb = run.peak_rss_mib * 1.048576  # MiB → MB
        report = {
            "size_mib": args.size_mib,
            "destination": args.to,
            "wall_s": round(wall, 2),
            "throughput_mib_s": round(args.size_mib / wall, 1),
            "peak_rss_mb": round(peak_mb, 1),
            "goal_peak_rss_mb": 150,
            "ok": peak_mb < 150,
            "bytes_copied": result["bytes_copied"],
        }
        print(json.dumps(report, indent=2))
        return 0 if report["ok"] else 1
    finally:
        for reg in (src, dst):
            if reg is not None:
                reg.stop()
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
