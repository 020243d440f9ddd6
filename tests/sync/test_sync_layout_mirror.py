"""``--layout mirror``: Docker Hub's repository paths kept, so the destination is a drop-in docker.io mirror.

The proof is a real containerd (Debian's package, started here with its own root, state and socket) that
pulls ``docker.io/library/NAME:TAG`` and ``docker.io/USER/APP:TAG`` with a ``hosts.toml`` whose server is
unreachable and whose only host is the mirror, as a node configured from the README would.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_sync_support import Env, head_digest

from hubmirror.plan import dest_repository
from hubmirror.reference import Reference
from hubmirror.testing import images as img
from hubmirror.testing.containerd import Containerd, start_containerd


@pytest.mark.parametrize(
    ("ref", "flat", "mirror"),
    [
        ("python:3.13", "ns/python", "ns/library/python"),
        ("bitnami/redis:7", "ns/bitnami/redis", "ns/bitnami/redis"),
        ("ghcr.io/a/b:1", "ns/a/b", "ns/ghcr.io/a/b"),
        ("registry.local:5000/team/app:1", "ns/team/app", "ns/registry.local-5000/team/app"),
    ],
)
def test_layouts_name_destination_repositories(ref: str, flat: str, mirror: str) -> None:
    r = Reference.parse(ref)
    assert dest_repository(r, "ns", "flat") == flat
    assert dest_repository(r, "ns", "mirror") == mirror
    assert dest_repository(r, "", "mirror") == mirror.removeprefix("ns/")


@pytest.fixture
def containerd(tmp_path: Path) -> Iterator[Containerd]:
    if shutil.which("containerd") is None or shutil.which("ctr") is None:
        pytest.skip("containerd/ctr are not installed (scripts/install installs Debian's containerd)")
    with start_containerd(tmp_path / "containerd") as c:
        yield c


def _hosts_dir(root: Path, mirror_host: str, prefix: str) -> Path:
    """A containerd hosts directory for docker.io, as the README gives it: the upstream server unreachable,
    the mirror the only host (plain HTTP here; ``override_path`` when the mirror lives under a prefix)."""
    d = root / "certs.d"
    (d / "docker.io").mkdir(parents=True)
    path = f"/v2/{prefix}" if prefix else ""
    override = "  override_path = true\n" if prefix else ""
    (d / "docker.io" / "hosts.toml").write_text(
        'server = "https://127.0.0.1:9"\n\n'
        f'[host."http://{mirror_host}{path}"]\n'
        '  capabilities = ["pull", "resolve"]\n'
        f"{override}"
    )
    return d


@pytest.mark.parametrize("prefix", ["", "hub"])
def test_containerd_pulls_library_and_user_images_through_the_mirror(
    env: Env, containerd: Containerd, prefix: str
) -> None:
    # An official-shaped index (platforms + attestations) of real tar layers: containerd unpacks what it pulls.
    layer = img.tar_layer("tinyish")
    platforms = ["linux/amd64", "linux/arm64/v8", "linux/arm/v7", "linux/ppc64le", "linux/s390x", "linux/386"]
    official = img.push_sync(
        env.hub.upstream, "library/tinyish", img.index("tinyish", platforms, layers=[layer]), ["1.0"]
    )
    user = img.push_sync(
        env.hub.upstream, "someuser/app", img.index("app", ["linux/amd64"], layers=[img.tar_layer("app")]), ["2"]
    )
    listing = env.root / "images.txt"
    listing.write_text("tinyish:1.0\ndocker.io/someuser/app:2\n")
    dest = f"{env.dest.host}/{prefix}" if prefix else env.dest.host

    args = env.cli_args("--list", str(listing), "--layout", "mirror", dest=dest)
    p = subprocess.run(args, capture_output=True, text=True, env=env.cli_env(), timeout=120, check=False)

    assert p.returncode == 0, p.stderr
    ns = f"{prefix}/" if prefix else ""
    assert head_digest(env.dest, f"{ns}library/tinyish", "1.0") == official.digest
    assert head_digest(env.dest, f"{ns}someuser/app", "2") == user.digest

    hosts = _hosts_dir(env.root, env.dest.host, prefix)
    for name, digest in [("docker.io/library/tinyish:1.0", official.digest), ("docker.io/someuser/app:2", user.digest)]:
        pulled = containerd.ctr("images", "pull", "--hosts-dir", str(hosts), name)
        assert pulled.returncode == 0, pulled.stdout + pulled.stderr
        listed = containerd.ctr("images", "ls")
        row = next(line for line in listed.stdout.splitlines() if line.startswith(name + " "))
        assert digest in row.split()


def test_flat_layout_cannot_serve_docker_io_paths(env: Env) -> None:
    """The default (flat) naming stays as it was: library images lose ``library/``."""
    img.push_sync(env.hub.upstream, "library/tinyish", img.index("tinyish", ["linux/amd64"]), ["1.0"])
    listing = env.root / "images.txt"
    listing.write_text("tinyish:1.0\n")
    p = env.cli("--list", str(listing))
    assert p.returncode == 0, p.stderr
    assert head_digest(env.dest, "mirror/tinyish", "1.0") is not None
    assert head_digest(env.dest, "mirror/library/tinyish", "1.0") is None


def test_layout_is_checked(env: Env) -> None:
    p = env.cli("--list", "/dev/null", "--layout", "nested", "--dry-run")
    assert p.returncode == 2  # a usage error on the command line
    assert "layout" in p.stderr and "'flat' or 'mirror'" in p.stderr
    assert "Traceback" not in p.stderr
