"""``hubmirror verify`` from the command line: what the state says is mirrored is read back from the
destination; a child manifest or blob deleted behind hubmirror's back is named (tag and digest) and
restored by ``--repair`` from the source; a corrupt blob in an OCI layout is found by ``--deep`` and
replaced; skopeo reads the repaired images."""

from __future__ import annotations

import json
import subprocess
import urllib.request

from test_sync_support import HUBMIRROR, NAMESPACE, Env, assert_complete, get_manifest, skopeo


def _verify(env: Env, *args: str, dest: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            HUBMIRROR,
            "verify",
            "--dest",
            dest or env.dest_prefix,
            "--state",
            str(env.state_path),
            "--source",
            env.hub.host,
            *args,
        ],
        capture_output=True,
        text=True,
        env=env.cli_env(),
        timeout=120,
        check=False,
    )


def _delete(env: Env, path: str) -> None:
    req = urllib.request.Request(f"{env.dest.url}/v2/{NAMESPACE}/{path}", method="DELETE")
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 202


@skopeo
def test_a_deleted_child_manifest_and_blob_are_named_and_repaired(env: Env) -> None:
    env.seed(repos=["pyish"])
    first = env.cli("--images", "pyish")
    assert first.returncode == 0, first.stderr
    clean = _verify(env)
    assert clean.returncode == 0, clean.stderr
    assert "everything the state records is at" in clean.stderr

    # Behind hubmirror's back: a child of the 3.14-trixie index, and a layer of the slim image, go away.
    trixie = json.loads(get_manifest(env.dest, f"{NAMESPACE}/pyish", "3.14-trixie"))
    child = trixie["manifests"][1]["digest"]
    _delete(env, f"pyish/manifests/{child}")
    slim = json.loads(get_manifest(env.dest, f"{NAMESPACE}/pyish", "3.14-slim"))
    image = json.loads(get_manifest(env.dest, f"{NAMESPACE}/pyish", slim["manifests"][0]["digest"]))
    layer = image["layers"][0]["digest"]
    _delete(env, f"pyish/blobs/{layer}")

    found = _verify(env, "--json")
    assert found.returncode == 1
    lines = [line for line in found.stderr.splitlines() if line.startswith("problem:")]
    assert any("pyish:3.14-trixie" in line and child in line and "child manifest missing" in line for line in lines)
    assert any(layer in line and "blob missing" in line for line in lines)
    assert json.loads(found.stdout)["exit_code"] == 1
    gets = env.hub.manifest_gets()

    fixed = _verify(env, "--repair")
    assert fixed.returncode == 0, fixed.stderr
    assert "all repaired" in fixed.stderr
    assert env.hub.manifest_gets() - gets <= 2  # the child (and nothing else) came back by digest
    for tag in ("3.14-trixie", "3.14-slim", "3.14"):
        assert_complete(env.dest, f"{NAMESPACE}/pyish", tag)
    again = _verify(env)
    assert again.returncode == 0, again.stderr
    copied = subprocess.run(
        ["skopeo", "copy", "--all", "--src-tls-verify=false", f"docker://{env.dest_prefix}/pyish:3.14-trixie",
         f"oci:{env.root / 'read-back'}:t"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert copied.returncode == 0, copied.stderr


def test_a_corrupt_blob_in_an_oci_layout_is_found_by_deep_and_replaced(env: Env) -> None:
    env.seed(repos=["tiny"])
    layout = env.root / "layout"
    first = env.cli("--images", "tiny", dest=f"oci:{layout}")
    assert first.returncode == 0, first.stderr
    dest = f"oci:{layout}"
    blobs = sorted((layout / "tiny" / "blobs" / "sha256").iterdir(), key=lambda p: p.stat().st_size)
    victim = blobs[-1]  # the biggest: a layer
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))

    shallow = _verify(env, dest=dest)
    assert shallow.returncode == 0, shallow.stderr  # same size: a HEAD cannot tell
    deep = _verify(env, "--deep", dest=dest)
    assert deep.returncode == 1
    assert f"sha256:{victim.name}" in deep.stderr and "blob corrupt" in deep.stderr

    fixed = _verify(env, "--deep", "--repair", dest=dest)
    assert fixed.returncode == 0, fixed.stderr
    assert _verify(env, "--deep", dest=dest).returncode == 0
    assert victim.read_bytes() != bytes(data)


def test_verify_without_a_destination_or_with_an_unknown_state_is_one_line(env: Env) -> None:
    out = subprocess.run(
        [HUBMIRROR, "verify", "--state", str(env.state_path)],
        capture_output=True,
        text=True,
        env=env.cli_env(),
        timeout=60,
        check=False,
    )
    assert out.returncode == 1
    assert out.stderr.strip().count("\n") == 0 and "no destination" in out.stderr
