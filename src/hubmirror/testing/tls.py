"""A throw-away certificate authority for TLS tests: a CA, a server certificate for 127.0.0.1 and
localhost, and a client certificate, made with the ``openssl`` command line tool."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

OPENSSL = shutil.which("openssl") or "openssl"
_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass(frozen=True)
class CertAuthority:
    """PEM files of a test CA and the certificates it issued (keys unencrypted)."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def server_context(self, *, client_certs: bool = False) -> ssl.SSLContext:
        """An `ssl.SSLContext` serving the server certificate (requiring a client certificate if asked)."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.server_cert, self.server_key)
        if client_certs:
            ctx.load_verify_locations(cafile=self.ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def client_context(self, *, client_cert: bool = False) -> ssl.SSLContext:
        """A verifying client context trusting the CA (presenting the client certificate if asked)."""
        ctx = ssl.create_default_context(cafile=self.ca)
        if client_cert:
            ctx.load_cert_chain(self.client_cert, self.client_key)
        return ctx


def make_ca(directory: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> CertAuthority:
    """Create a CA under *directory* and issue a server certificate for *hosts* and a client certificate."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / "ca.pem", directory / "ca.key"
    _openssl(
        "req", "-x509", *_EC, "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=hubmirror test CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    sans = ",".join(f"IP:{h}" if h.replace(".", "").isdigit() or ":" in h else f"DNS:{h}" for h in hosts)
    server = _issue(directory, "server", ca, ca_key, f"subjectAltName={sans}\nextendedKeyUsage=serverAuth\n")
    client = _issue(directory, "client", ca, ca_key, "extendedKeyUsage=clientAuth\n")
    return CertAuthority(ca, server[0], server[1], client[0], client[1])


def _issue(directory: Path, name: str, ca: Path, ca_key: Path, extensions: str) -> tuple[Path, Path]:
    cert, key, csr, ext = (directory / f"{name}{s}" for s in (".pem", ".key", ".csr", ".ext"))
    ext.write_text("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n" + extensions)
    _openssl("req", "-new", *_EC, "-keyout", key, "-out", csr, "-subj", f"/CN=hubmirror test {name}")
    _openssl(
        "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert, "-days", "2",
        "-extfile", ext,
    )  # fmt: skip
    return cert, key


def _openssl(*args: object) -> None:
    proc = subprocess.run([OPENSSL, *map(str, args)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {proc.stderr.strip()[-500:]}")
