"""``--layout mirror``: Docker Hub's repository paths kept, so the destination is a drop-in docker.io mirror.

The proof is a real containerd (Debian's package, started here with its own root, state and socket) that
pulls ``docker.io/library/NAME:TAG`` and ``docker.io/USER/APP:TAG`` with a ``hosts.toml`` whose server is
unreachable and whose only host is the mirror, and podman (or skopeo, which reads the same
containers-registries.conf) through a ``registries.conf`` mirror: each config is the snippet of
docs/drop-in-mirrors.md as written there, the plain-HTTP variants here (the test registries speak HTTP).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
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


DOCS = Path(__file__).resolve().parents[2] / "docs" / "drop-in-mirrors.md"
#: Where the docs' snippets say the mirror is, and where a test's upstream cannot be reached (loopback, port 9).
DOC_MIRROR, UNREACHABLE = "registry.local:5000", "127.0.0.1:9"


def snippet(name: str) -> str:
    """The code block after ``<!-- snippet: NAME -->`` in docs/drop-in-mirrors.md."""
    m = re.search(rf"<!-- snippet: {re.escape(name)} -->\n```\w*\n(.*?)```", DOCS.read_text(), re.S)
    assert m, f"docs/drop-in-mirrors.md has no snippet {name}"
    return m.group(1)


def _hosts_dir(root: Path, mirror_host: str, prefix: str) -> Path:
    """A containerd hosts directory for docker.io with the docs' plain-HTTP hosts.toml: the upstream server
    unreachable, the mirror the only host (``override_path`` when the mirror lives under a prefix)."""
    d = root / "certs.d"
    (d / "docker.io").mkdir(parents=True)
    text = snippet("containerd-http-prefix" if prefix else "containerd-http")
    assert f'[host."http://{DOC_MIRROR}' in text
    text = text.replace("https://registry-1.docker.io", f"https://{UNREACHABLE}").replace(DOC_MIRROR, mirror_host)
    (d / "docker.io" / "hosts.toml").write_text(text.replace("/v2/hub", f"/v2/{prefix}"))
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


def _registries_conf(path: Path, mirror: str, *, insecure: bool) -> Path:
    """The docs' registries.conf (plain-HTTP variant or not), the mirror at *mirror*, Docker Hub unreachable."""
    text = snippet("podman-http" if insecure else "podman-https")
    assert f'location = "{DOC_MIRROR}/hub"' in text and ("insecure = true" in text) == insecure
    text = text.replace('location = "docker.io"', f'location = "{UNREACHABLE}"').replace(f"{DOC_MIRROR}/hub", mirror)
    path.write_text(text)
    return path


def _pull(root: Path, conf: Path, name: str) -> tuple[bool, str, str]:
    """Pull *name* as podman does with *conf* (ok, digest, output); skopeo (same registries.conf) without podman."""
    env = {**os.environ, "CONTAINERS_REGISTRIES_CONF": str(conf)}
    if shutil.which("podman") is not None and os.geteuid() == 0:
        run = Path(tempfile.mkdtemp(prefix="pm-", dir="/tmp"))  # podman refuses a runroot over 50 characters
        store = ["--root", str(root / "podman"), "--runroot", str(run), "--storage-driver", "vfs"]
        try:
            p = subprocess.run(["podman", *store, "pull", name], capture_output=True, text=True, env=env, timeout=120)
            if p.returncode != 0:
                return False, "", p.stderr
            inspect = ["podman", *store, "image", "inspect", "--format", "{{.Digest}}", name]
            q = subprocess.run(inspect, capture_output=True, text=True, env=env, timeout=60)
            return True, q.stdout.strip(), p.stderr
        finally:
            shutil.rmtree(run, ignore_errors=True)
    p = subprocess.run(
        ["skopeo", "--registries-conf", str(conf), "inspect", f"docker://{name}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    return p.returncode == 0, json.loads(p.stdout)["Digest"] if p.returncode == 0 else "", p.stderr


@pytest.mark.skipif(shutil.which("podman") is None and shutil.which("skopeo") is None, reason="needs podman or skopeo")
def test_podman_pulls_through_a_plain_http_mirror_with_insecure_true_and_not_without(env: Env) -> None:
    official = img.push_sync(
        env.hub.upstream, "library/tinyish", img.index("tinyish", ["linux/amd64"], layers=[img.tar_layer("t")]), ["1"]
    )
    listing = env.root / "images.txt"
    listing.write_text("tinyish:1\n")
    p = env.cli("--list", str(listing), "--layout", "mirror", dest=f"{env.dest.host}/hub")
    assert p.returncode == 0, p.stderr
    mirror = f"{env.dest.host}/hub"

    plain = _registries_conf(env.root / "https.conf", mirror, insecure=False)
    ok, _, err = _pull(env.root / "a", plain, "docker.io/library/tinyish:1")
    assert not ok and "HTTP response to HTTPS client" in err, err  # the HTTPS snippet on a plain-HTTP mirror

    conf = _registries_conf(env.root / "http.conf", mirror, insecure=True)
    ok, digest, err = _pull(env.root / "b", conf, "docker.io/library/tinyish:1")
    assert ok, err
    assert digest == official.digest
