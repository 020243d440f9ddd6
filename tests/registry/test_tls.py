"""TLS per registry: a CA file, a client certificate, for every request to the registry, token requests
included. Real parts: Debian's docker-registry serving HTTPS and requiring client certificates, and the
Docker Hub emulator (token server on the same TLS port) with a CA made by `hubmirror.testing.tls`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from _auth import PASSWORD, USER
from hubmirror.media import ACCEPT
from hubmirror.testing.hub import HubEmulator
from hubmirror.testing.images import index, push_sync
from hubmirror.testing.registry import Registry
from hubmirror.testing.tls import CertAuthority, make_ca

HUBMIRROR = str(Path(sys.executable).parent / "hubmirror")
PLATFORMS = ("linux/amd64", "linux/arm64/v8")


@pytest.fixture
def ca(tmp_path: Path) -> CertAuthority:
    return make_ca(tmp_path / "ca")


@pytest.fixture
def tls_hub(ca: CertAuthority, make_registry: Callable[..., Registry]) -> Iterator[HubEmulator]:
    """The Hub emulator over HTTPS: its token endpoint (the Bearer realm) is on the same TLS port."""
    with HubEmulator(make_registry(), users={USER: PASSWORD}, ssl_context=ca.server_context()) as hub:
        yield hub


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("HUBMIRROR_", "SSL_CERT"))}
    full_env.update(env or {})
    return subprocess.run([HUBMIRROR, *args], capture_output=True, text=True, timeout=300, env=full_env, check=False)


def manifest_digest(reg: Registry, ca: CertAuthority, repo: str, tag: str) -> str:
    req = urllib.request.Request(f"{reg.url}/v2/{repo}/manifests/{tag}", method="HEAD", headers={"Accept": ACCEPT})
    with urllib.request.urlopen(req, timeout=30, context=ca.client_context(client_cert=True)) as r:
        return str(r.headers["Docker-Content-Digest"])


def test_copy_over_tls_with_token_server_and_client_certificate(
    ca: CertAuthority, tls_hub: HubEmulator, make_registry: Callable[..., Registry], repo_name: str
) -> None:
    img = push_sync(tls_hub.upstream, "library/app", index("app", PLATFORMS), ["1"])
    dest = make_registry(tls=ca, client_certs=True)
    src, dst = f"{tls_hub.host}/library/app:1", f"{dest.host}/{repo_name}:1"
    tls = [
        *("--ca-file", str(ca.ca)),  # both registries
        *("--cert-file", f"{dest.host}={ca.client_cert}"),
        *("--key-file", f"{dest.host}={ca.client_key}"),
    ]

    proc = run("copy", src, dst, "--json", *tls)

    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["digest"] == img.digest
    assert manifest_digest(dest, ca, repo_name, "1") == img.digest
    assert tls_hub.token_requests() >= 1  # the token came from the TLS realm, verified with the CA

    # Without the client certificate the destination refuses the connection: one clear line, exit 1.
    refused = run("copy", src, f"{dest.host}/{repo_name}:2", "--ca-file", str(ca.ca))
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert dest.host in refused.stderr
    # Without the CA, verification fails and says how to fix it.
    untrusted = run("copy", src, f"{dest.host}/{repo_name}:2", "--cert-file", str(ca.client_cert),
                    "--key-file", str(ca.client_key))  # fmt: skip
    assert untrusted.returncode == 1 and "CA file" in untrusted.stderr, untrusted.stderr


def test_sync_config_tls_applies_to_source_token_server_and_destination(
    ca: CertAuthority, tls_hub: HubEmulator, make_registry: Callable[..., Registry], tmp_path: Path
) -> None:
    img = push_sync(tls_hub.upstream, "library/app", index("app", PLATFORMS), ["1"])
    dest = make_registry(tls=ca, client_certs=True)
    (tmp_path / "list.txt").write_text(f"{tls_hub.host}/library/app:1\n")
    (tmp_path / "hubmirror.yaml").write_text(
        f"""
list: list.txt
dest: {dest.host}/mirror
state: state.db
tls:
  {tls_hub.host}:
    ca_file: ca/ca.pem
  {dest.host}:
    ca_file: ca/ca.pem
    cert_file: ca/client.pem
    key_file: ca/client.key
"""
    )

    proc = run("sync", "--config", str(tmp_path / "hubmirror.yaml"))

    assert proc.returncode == 0, proc.stderr
    assert manifest_digest(dest, ca, "mirror/library/app", "1") == img.digest
    assert tls_hub.token_requests() >= 1
