"""Never a dangling tag (issue 14): prune deletes a tag, never content that something kept references; an
index whose children went missing is repaired; a fresh state adopts what an earlier run wrote; a destination
that lost its immutable tags gets them back; a moved tag's old signature goes in the run that moves it.

Each test runs ``hubmirror sync`` in a subprocess against real registries, and reads the destination with
skopeo, a client independent of hubmirror.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from test_sync_support import _HEAD, NAMESPACE, PYISH, Env, assert_complete, skopeo

from hubmirror.state import State
from hubmirror.testing import images as img
from hubmirror.testing.registry import REGISTRY_BIN, Registry, _wait_ready

#: An official image's platforms: 8 images, each with its attestation manifest (17 manifests an index).
PLATFORMS = (
    "linux/amd64",
    "linux/arm/v5",
    "linux/arm/v7",
    "linux/arm64/v8",
    "linux/386",
    "linux/mips64le",
    "linux/ppc64le",
    "linux/s390x",
)


def pull_all(env: Env, repo: str, tag: str, into: Path) -> None:
    """skopeo copies every platform of *repo:tag* from the destination (fails if a child is missing)."""
    src = f"docker://{env.dest.host}/{NAMESPACE}/{repo}:{tag}"
    into.mkdir(parents=True, exist_ok=True)
    dst = f"oci:{into / repo.replace('/', '_')}-{tag}:{tag}"
    args = ["skopeo", "copy", "-q", "--all", "--src-tls-verify=false", src, dst]
    p = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 0, p.stderr


def report(p: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert p.returncode == 0, p.stderr
    rep: dict[str, Any] = json.loads(p.stdout)
    return rep


def tags_of(rep: dict[str, Any], outcome: str) -> dict[str, str | None]:
    return {t: i.get("reason") for i in rep["items"] if i["outcome"] == outcome for t in i["tags"]}


def delete_manifest(reg: Registry, repo: str, digest: str) -> None:
    """DELETE a manifest by digest, as someone else (or an older hubmirror's prune) would."""
    req = urllib.request.Request(f"{reg.url}/v2/{repo}/manifests/{digest}", method="DELETE")
    urllib.request.urlopen(req, timeout=30).close()


# ------------------------------------------------------------------------------------------ prune by reference


@skopeo
def test_pruning_a_per_arch_tag_keeps_the_index_that_stays_whole(env: Env, tmp_path: Path) -> None:
    ix = img.push_sync(env.hub.upstream, "team/app", img.index("app", PLATFORMS), ["1.0"])
    amd64 = img.push_sync(env.hub.upstream, "team/app", ix.images[0], ["1.0-amd64"])
    listed = tmp_path / "app.list"
    listed.write_text("docker.io/team/app:1.0\ndocker.io/team/app:1.0-amd64\n")
    assert env.cli("--list", str(listed)).returncode == 0
    assert env.dest_digest("team/app", "1.0-amd64") == amd64.digest == ix.images[0].digest

    # The per-arch tag leaves the list (edited in place: the same job); the index 1.0 stays.
    listed.write_text("docker.io/team/app:1.0\n")
    rep = report(env.cli("--list", str(listed), "--prune", "--json"))

    assert list(tags_of(rep, "pruned")) == ["1.0-amd64"]
    assert env.dest_tags("team/app") == ["1.0"]
    assert env.dest_digest("team/app", "1.0") == ix.digest
    assert_complete(env.dest, f"{NAMESPACE}/team/app", "1.0")  # every child, the amd64 image included
    pull_all(env, "team/app", "1.0", tmp_path)
    with State.open(env.state_path) as state:
        assert [(d.tag, d.how) for d in state.deletions()] == [("1.0-amd64", "placeholder")]

    env.hub.reset_counts()
    again = report(env.cli("--list", str(listed), "--json"))
    assert again["counts"]["copied"] == again["counts"]["failed"] == again["counts"]["pruned"] == 0
    assert "1.0" in tags_of(again, "up_to_date") and env.hub.manifest_gets() == 0
    pull_all(env, "team/app", "1.0", tmp_path / "again")


def test_pruning_a_per_arch_tag_from_an_oci_layout_deletes_the_tag_alone(env: Env, tmp_path: Path) -> None:
    ix = img.push_sync(env.hub.upstream, "team/app", img.index("app", PLATFORMS), ["1.0"])
    img.push_sync(env.hub.upstream, "team/app", ix.images[0], ["1.0-amd64"])
    layout = tmp_path / "layout"
    listed = tmp_path / "app.list"
    listed.write_text("docker.io/team/app:1.0\ndocker.io/team/app:1.0-amd64\n")
    assert env.cli("--list", str(listed), dest=f"oci:{layout}").returncode == 0

    listed.write_text("docker.io/team/app:1.0\n")
    p = env.cli("--list", str(listed), "--prune", "--json", dest=f"oci:{layout}")

    assert list(tags_of(report(p), "pruned")) == ["1.0-amd64"]
    entries = json.loads((layout / "team" / "app" / "index.json").read_text())["manifests"]
    assert [e["annotations"]["org.opencontainers.image.ref.name"] for e in entries] == ["1.0"]
    blobs = layout / "team" / "app" / "blobs" / "sha256"
    assert all((blobs / c.digest.split(":")[1]).exists() for c in ix.manifest.children)
    if shutil.which("skopeo"):
        dst = f"oci:{tmp_path / 'copy'}:1.0"
        args = ["skopeo", "copy", "-q", "--all", f"oci:{layout / 'team' / 'app'}:1.0", dst]
        assert subprocess.run(args, capture_output=True, timeout=120, check=False).returncode == 0


@skopeo
def test_an_index_whose_child_was_deleted_behind_hubmirrors_back_is_repaired(env: Env, tmp_path: Path) -> None:
    ix = img.push_sync(env.hub.upstream, "team/app", img.index("app", PLATFORMS), ["1.0", "1"])
    listed = tmp_path / "app.list"
    listed.write_text("docker.io/team/app:1.0\ndocker.io/team/app:1\n")
    assert env.cli("--list", str(listed)).returncode == 0
    gone = ix.images[3].digest  # linux/arm64/v8
    delete_manifest(env.dest, f"{NAMESPACE}/team/app", gone)
    args = ["skopeo", "copy", "-q", "--all", "--src-tls-verify=false"]
    broken = subprocess.run(
        [*args, f"docker://{env.dest.host}/{NAMESPACE}/team/app:1.0", f"oci:{tmp_path / 'broken'}:1.0"],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert broken.returncode != 0  # the index is there, a child is not: clients cannot pull it

    # A day later the check looks at the children of what it believes up to date (HEADs at the destination).
    with State.open(env.state_path) as state:
        state.set_children_checked(f"{env.dest.host}/{NAMESPACE}/", datetime.now(UTC) - timedelta(days=2))
    env.hub.reset_counts()
    rep = report(env.cli("--list", str(listed), "--json"))

    assert tags_of(rep, "copied") == {"1.0": "children missing", "1": "children missing"}
    assert env.hub.manifest_gets() == 1 and env.hub.manifest_gets("team/app") == 1  # only the missing child
    assert env.dest_digest("team/app", "1.0") == env.dest_digest("team/app", "1") == ix.digest
    assert_complete(env.dest, f"{NAMESPACE}/team/app", "1.0")
    pull_all(env, "team/app", "1.0", tmp_path)

    again = report(env.cli("--list", str(listed), "--json"))
    assert again["counts"]["copied"] == 0 and set(tags_of(again, "up_to_date")) >= {"1.0", "1"}


# ------------------------------------------------------------------------------------------ a fresh state

#: hello-world: a Linux entry of 10 platforms whose SharedTag `latest` it shares with two Windows entries.
HELLO = (
    _HEAD.format(name="hello-world")
    + """GitCommit: 4444444444444444444444444444444444444444

Tags: linux
SharedTags: latest
Architectures: amd64, arm32v5, arm32v6, arm32v7, arm64v8, i386, mips64le, ppc64le, riscv64, s390x
Directory: amd64/hello-world

Tags: nanoserver-ltsc2022
SharedTags: nanoserver, latest
Architectures: windows-amd64
Directory: amd64/hello-world/nanoserver-ltsc2022
Constraints: nanoserver-ltsc2022

Tags: nanoserver-1809
SharedTags: nanoserver, latest
Architectures: windows-amd64
Directory: amd64/hello-world/nanoserver-1809
Constraints: nanoserver-1809
"""
)

#: memcached: two entries of 8 platforms each.
MEMCACHED = (
    _HEAD.format(name="memcached")
    + """GitCommit: 5555555555555555555555555555555555555555

Tags: 1.6.39, 1.6, 1, latest
Architectures: amd64, arm32v5, arm32v7, arm64v8, i386, mips64le, ppc64le, s390x
Directory: 1/debian

Tags: 1.6.39-alpine, 1.6-alpine, 1-alpine, alpine
Architectures: amd64, arm32v6, arm32v7, arm64v8, i386, ppc64le, riscv64, s390x
Directory: 1/alpine
"""
)


def test_a_fresh_state_adopts_what_an_earlier_run_wrote(env: Env) -> None:
    env.commit({"hello-world": HELLO, "memcached": MEMCACHED, "pyish": PYISH, "tiny": None})  # type: ignore[dict-item]
    seeded = env.seed()
    # pyish's Windows build is not out yet: its SharedTags (3.14, 3, latest) are the Linux entry's index,
    # every child of which the default selection keeps: written as it is (the source's own digest).
    trixie = env.indexes("pyish")["3.14-trixie"]
    img.push_sync(env.hub.upstream, "library/pyish", trixie, ["3.14", "3", "latest"])
    first = report(env.cli("--json"))
    assert first["counts"]["failed"] == 0
    # hello-world:latest lists Windows children, which the default selection leaves out: a filtered index.
    assert env.dest_digest("hello-world", "latest") not in (None, seeded["hello-world:latest"])
    assert env.dest_digest("pyish", "latest") == trixie.digest

    # The state is lost (moved away, as the README advises for a corrupt one): the next run adopts the
    # destination as it is, copies nothing, reports no conflict.
    shutil.move(env.state_path.parent, env.root / "lost-state")
    env.hub.reset_counts()
    rep = report(env.cli("--json"))

    assert rep["exit_code"] == 0 and rep["failed"] == []
    assert rep["counts"]["copied"] == rep["counts"]["retagged"] == rep["counts"]["failed"] == 0
    assert env.hub.manifest_gets() == 0
    adopted = set(tags_of(rep, "up_to_date"))
    assert {"latest", "linux", "3.14", "3", "1.6-alpine", "3.14-slim"} <= adopted
    with State.open(env.state_path) as state:
        for repo, tag in (("hello-world", "latest"), ("pyish", "latest"), ("memcached", "1.6")):
            rec = state.tag(env.key(repo), tag)
            assert rec is not None and not rec.created_by_hubmirror, (repo, tag)  # adopted: never pruned
    again = report(env.cli("--json"))
    assert again["counts"]["copied"] == again["counts"]["failed"] == 0


# ------------------------------------------------------------------------------------------ immutable tags


def restart_wiped(reg: Registry) -> None:
    """Stop *reg*, delete everything it stored, start it again on the same address."""
    reg.stop()
    shutil.rmtree(reg.root / "data")
    with (reg.root / "registry.log").open("ab") as out:
        reg.process = subprocess.Popen(
            [REGISTRY_BIN, "serve", str(reg.root / "config.yml")], stdout=out, stderr=subprocess.STDOUT, cwd=reg.root
        )
    _wait_ready(reg)


@skopeo
def test_a_wiped_destination_gets_its_immutable_tags_back(env: Env, tmp_path: Path) -> None:
    for n, tag in enumerate(["1.0.0", "1.0.1", "latest"]):
        img.push_sync(env.hub.upstream, "team/tool", img.index(f"tool-{n}", PLATFORMS), [tag])
    args = ("--repo", f"{env.hub.host}/team/tool", "--immutable", r"\d+\.\d+\.\d+", "--json")
    assert report(env.cli(*args))["counts"]["copied"] == 3

    restart_wiped(env.dest)
    assert env.dest_tags("team/tool") == []
    env.hub.reset_counts()
    rep = report(env.cli(*args))

    assert set(tags_of(rep, "copied")) == {"1.0.0", "1.0.1", "latest"}
    # The source was not asked about the immutable tags (no HEAD); their content was fetched to copy it.
    assert [r for r in env.hub.records if r.method == "HEAD" and r.ref in ("1.0.0", "1.0.1")] == []
    for tag in ("1.0.0", "1.0.1", "latest"):
        assert_complete(env.dest, f"{NAMESPACE}/team/tool", tag)
    pull_all(env, "team/tool", "1.0.0", tmp_path)


# ------------------------------------------------------------------------------------------ signatures


def test_a_moved_tags_old_signature_is_pruned_in_the_run_that_moves_it(env: Env, tmp_path: Path) -> None:
    hub = env.hub
    old = img.push_sync(hub.upstream, "team/app", img.index("app", PLATFORMS), ["1.0"])
    old_sig = img.push_sync(
        hub.upstream,
        "team/app",
        img.cosign_signature(old.digest, reference="docker.io/team/app"),
        [img.cosign_tag(old.digest)],
    )
    listed = tmp_path / "app.list"
    listed.write_text("docker.io/team/app:1.0\n")
    assert env.cli("--list", str(listed)).returncode == 0
    assert env.dest_tags("team/app") == sorted(["1.0", img.cosign_tag(old.digest)])

    # 1.0 is rebuilt upstream and signed again: one run moves the tag and deletes the old signature.
    new = img.push_sync(hub.upstream, "team/app", img.index("app", PLATFORMS, generation=1), ["1.0"])
    img.push_sync(
        hub.upstream,
        "team/app",
        img.cosign_signature(new.digest, reference="docker.io/team/app"),
        [img.cosign_tag(new.digest)],
    )
    rep = report(env.cli("--list", str(listed), "--prune", "--json"))

    assert list(tags_of(rep, "pruned")) == [img.cosign_tag(old.digest)]
    assert env.dest_tags("team/app") == sorted(["1.0", img.cosign_tag(new.digest)])
    assert env.dest_digest("team/app", "1.0") == new.digest
    assert_complete(env.dest, f"{NAMESPACE}/team/app", "1.0")
    assert old_sig.digest not in {env.dest_digest("team/app", t) for t in env.dest_tags("team/app")}
    again = report(env.cli("--list", str(listed), "--prune", "--json"))
    assert again["counts"]["pruned"] == again["counts"]["copied"] == 0
