"""kill -9 in the middle of ``hubmirror sync``: no destination tag points at an incomplete image, and the
next run completes."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time

import pytest
from test_sync_support import NAMESPACE, Env, assert_complete, blob_files, env_fixture, many_library  # noqa: F401

ENTRIES = 8
LAYER = 3 << 20  # 8 entries x 2 platforms x 3 MiB: big enough to be caught mid-way


def complete_tags(env: Env) -> dict[str, str]:
    """Every tag in the destination's `many` repo, each checked to resolve to a complete image."""
    return {tag: assert_complete(env.dest, f"{NAMESPACE}/many", tag) for tag in env.dest_tags("many")}


def test_kill_9_mid_sync_then_rerun_completes_with_only_complete_images(env: Env) -> None:
    env.commit({"pyish": "", "tiny": "", **many_library(ENTRIES)})
    seeded = env.seed(layer_size=LAYER)

    proc = subprocess.Popen(
        env.cli_args("--concurrency", "2"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env.cli_env()
    )
    try:
        deadline = time.monotonic() + 60
        # Wait until the destination has received some content, then kill at once.
        while blob_files(env.dest) < 3 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)  # a poll of the registry's storage, not a timing assumption
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != -signal.SIGKILL:
        pytest.fail(f"the sync ended before it could be killed (exit {proc.returncode}); make the images bigger")
    before = complete_tags(env)  # whatever tags exist already are complete
    assert len(before) < 2 * ENTRIES  # and the run was cut short

    rerun = env.cli()

    assert rerun.returncode == 0, rerun.stderr
    after = complete_tags(env)
    assert sorted(after) == sorted(f"{i}{s}" for i in range(1, ENTRIES + 1) for s in (".0", ""))
    for tag, digest in after.items():
        assert digest == seeded[f"many:{tag}"]
    if shutil.which("skopeo"):
        for tag in (f"{ENTRIES}.0", "1"):
            raw = subprocess.run(
                ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{env.dest_prefix}/many:{tag}"],
                capture_output=True,
                timeout=60,
                check=False,
            )
            assert raw.returncode == 0, raw.stderr
            p = subprocess.run(
                [
                    "skopeo",
                    "copy",
                    "--all",
                    "--src-tls-verify=false",
                    f"docker://{env.dest_prefix}/many:{tag}",
                    f"oci:{env.root / 'oci-copy'}:{tag}",
                ],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert p.returncode == 0, p.stderr
