"""Benchmark: parse the whole official-images library at one commit of the history bundle.

Usage: python bench/parse_library.py [--bundle PATH] [--commit REV] [--repeat N]
Prints the time to read ``library/`` through git (ls-tree + one cat-file) and parse every file, cold
(empty parse cache), plus the pure parse time without git. Goal: < 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

from hubmirror.library import LibrarySource, ParseCache, is_image_file, load_library, parse_library_file


def default_bundle() -> Path:
    env = os.environ.get("HUBMIRROR_LIBRARY_BUNDLE")
    return (
        Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared/data/official-images-library.bundle"
    )


async def main(bundle: Path, commit: str | None, repeat: int) -> None:
    with tempfile.TemporaryDirectory() as cache:
        source = await LibrarySource.open(str(bundle), Path(cache))
        rev = await source.resolve(commit)
        loads = []
        for _ in range(repeat):
            t = time.perf_counter()
            lib = await load_library(source, rev, cache=ParseCache())
            loads.append(time.perf_counter() - t)
        files = [f for f in await source.list_files(rev) if is_image_file(f.name)]
        blobs = await source.read_blobs(f.blob for f in files)
        parses = []
        for _ in range(repeat):
            t = time.perf_counter()
            for f in files:
                data = blobs[f.blob]
                assert data is not None
                parse_library_file(data, f.name)
            parses.append(time.perf_counter() - t)
    s = lib.stats()
    print(f"commit {rev[:12]}: {s.files} files, {s.entries} entries, {s.tags} tags, {s.errors} errors")
    print(f"git read + parse (cold cache): median {statistics.median(loads) * 1000:.1f} ms over {repeat} runs")
    print(f"parse only:                    median {statistics.median(parses) * 1000:.1f} ms over {repeat} runs")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=default_bundle())
    ap.add_argument("--commit", default=None, help="rev to parse (default: the bundle's branch tip)")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    asyncio.run(main(args.bundle, args.commit, args.repeat))
