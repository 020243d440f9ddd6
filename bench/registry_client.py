"""Measure `RegistryClient` throughput against a local Distribution registry (loopback, no auth).

Prints JSON: MiB/s for monolithic and chunked uploads and for streaming downloads of one blob, and the
mean latency of manifest HEADs. Usage: ``python bench/registry_client.py [--mib 64] [--heads 200]``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from hubmirror.media import OCI_MANIFEST, Manifest
from hubmirror.registry import RegistryClient
from hubmirror.testing.registry import start_registry


async def chunks(data: bytes, n: int = 1 << 20) -> AsyncIterator[bytes]:
    for i in range(0, len(data), n):
        yield data[i : i + n]


async def run(mib: int, heads: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        reg = start_registry(Path(tmp))
        try:
            async with RegistryClient(reg.host, anonymous=True) as c:
                out: dict[str, float] = {"blob_mib": mib}
                for name in ("monolithic", "chunked"):
                    data = os.urandom(mib << 20)
                    digest = "sha256:" + hashlib.sha256(data).hexdigest()
                    t = time.perf_counter()
                    if name == "monolithic":
                        await c.push_blob_monolithic("bench/a", digest, len(data), chunks(data))
                    else:
                        await c.push_blob_chunked("bench/a", digest, chunks(data))
                    out[f"upload_{name}_mib_s"] = round(mib / (time.perf_counter() - t), 1)
                t = time.perf_counter()
                total = 0
                async with c.open_blob("bench/a", digest) as stream:
                    async for piece in stream:
                        total += len(piece)
                assert total == len(data)
                out["download_mib_s"] = round(mib / (time.perf_counter() - t), 1)
                cfg = b"{}"
                cd = "sha256:" + hashlib.sha256(cfg).hexdigest()
                await c.push_blob("bench/a", cd, chunks(cfg), len(cfg))
                m = Manifest(
                    json.dumps(
                        {
                            "schemaVersion": 2,
                            "mediaType": OCI_MANIFEST,
                            "config": {
                                "mediaType": "application/vnd.oci.image.config.v1+json",
                                "digest": cd,
                                "size": 2,
                            },
                            "layers": [],
                        }
                    ).encode(),
                    OCI_MANIFEST,
                )
                await c.put_manifest("bench/a", "1", m)
                t = time.perf_counter()
                for _ in range(heads):
                    await c.head_manifest("bench/a", "1")
                out["manifest_head_ms"] = round((time.perf_counter() - t) * 1000 / heads, 2)
                t = time.perf_counter()
                await asyncio.gather(*(c.head_manifest("bench/a", "1") for _ in range(heads)))
                out["manifest_heads_concurrent_per_s"] = round(heads / (time.perf_counter() - t), 0)
                return out
        finally:
            reg.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mib", type=int, default=64)
    ap.add_argument("--heads", type=int, default=200)
    args = ap.parse_args()
    print(json.dumps(asyncio.run(run(args.mib, args.heads)), indent=2))


if __name__ == "__main__":
    main()
