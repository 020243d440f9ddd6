"""Start real Distribution registries (Debian's ``docker-registry``) on free loopback ports."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import yaml

from .tls import CertAuthority

REGISTRY_BIN = os.environ.get("HUBMIRROR_REGISTRY_BIN") or shutil.which("docker-registry") or "docker-registry"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def htpasswd_line(user: str, password: str) -> str:
    import bcrypt

    return f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()}"


@dataclass
class Registry:
    """A running registry: ``host`` is ``127.0.0.1:PORT``; ``url`` is ``http://host``."""

    host: str
    root: Path
    process: subprocess.Popen[bytes]
    username: str | None = None
    password: str | None = None
    log: Path = field(default_factory=Path)
    tls: CertAuthority | None = None  # served over HTTPS with this CA's server certificate

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    @property
    def port(self) -> int:
        return int(self.host.rsplit(":", 1)[1])

    def auth_headers(self) -> dict[str, str]:
        """The Basic ``Authorization`` header for this registry's user, if it has one (what a proxy in front of
        it sends)."""
        if self.username is None or self.password is None:
            return {}
        return {"Authorization": aiohttp.encode_basic_auth(self.username, self.password)}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_registry(
    workdir: Path,
    *,
    username: str | None = None,
    password: str | None = None,
    delete: bool = True,
    tls: CertAuthority | None = None,
    client_certs: bool = False,
) -> Registry:
    """Start ``docker-registry`` with filesystem storage under *workdir*; wait until ``/v2/`` answers.

    With *tls* it serves HTTPS with that CA's server certificate, and with *client_certs* it also
    requires a client certificate issued by the CA (mutual TLS).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config: dict[str, object] = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(workdir / "data")},
            "delete": {"enabled": delete},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {"addr": f"127.0.0.1:{port}", "secret": "hubmirror-test"},
        # Foreign (Windows) layers carry URLs; allow them so such manifests can be stored (ref §D.13.5).
        "validation": {"manifests": {"urls": {"allow": ["^https?://"]}}},
    }
    if tls is not None:
        http = config["http"]
        assert isinstance(http, dict)
        http["tls"] = {"certificate": str(tls.server_cert), "key": str(tls.server_key)}
        if client_certs:
            http["tls"]["clientcas"] = [str(tls.ca)]
    if username is not None and password is not None:
        htpasswd = workdir / "htpasswd"
        htpasswd.write_text(htpasswd_line(username, password) + "\n")
        config["auth"] = {"htpasswd": {"realm": "hubmirror-test", "path": str(htpasswd)}}
    cfg_path = workdir / "config.yml"
    cfg_path.write_text(yaml.safe_dump(config))
    log = workdir / "registry.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [REGISTRY_BIN, "serve", str(cfg_path)], stdout=out, stderr=subprocess.STDOUT, cwd=workdir
        )
    reg = Registry(f"127.0.0.1:{port}", workdir, proc, username, password, log, tls)
    _wait_ready(reg)
    return reg


def _wait_ready(reg: Registry) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if reg.process.poll() is not None:
            raise RuntimeError(f"docker-registry exited: {reg.log.read_text()[-2000:]}")
        try:
            ctx = reg.tls.client_context(client_cert=True) if reg.tls else None
            urllib.request.urlopen(f"{reg.url}/v2/", timeout=1, context=ctx).close()
            return
        except urllib.error.HTTPError as e:  # 401 with auth: it is up
            if e.code == 401:
                return
        except OSError:
            pass
        time.sleep(0.05)  # readiness poll, bounded by the deadline; not a timing assumption
    reg.stop()
    raise RuntimeError("docker-registry did not start within 20 s")
