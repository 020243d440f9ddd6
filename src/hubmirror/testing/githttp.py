"""A git repository served over HTTP with Basic authentication (git's "dumb" protocol: static files), for
tests of library URLs that carry credentials (``http://user:TOKEN@127.0.0.1:PORT/NAME.git``).

`GitHTTP.publish` makes a bare copy of a working repository (``git clone --bare`` plus ``git
update-server-info``); call it again after new commits. Requests without the right ``Authorization`` get
401 with a Basic challenge, as a forge does; `GitHTTP.broken` makes every request a 500.
"""

from __future__ import annotations

import base64
import hmac
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit


class GitHTTP:
    """Serves bare repositories under *root* at ``/NAME.git`` to *user* with password *password*."""

    def __init__(self, root: Path, user: str, password: str) -> None:
        self.root = root
        self.user, self.password = user, password
        self.broken = False
        self.requests = 0
        self.refused = 0
        root.mkdir(parents=True, exist_ok=True)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="git-http", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, name: str, *, user: str | None = None, password: str | None = None) -> str:
        """``http://USER:PASSWORD@127.0.0.1:PORT/NAME.git`` (this server's credentials unless given)."""
        u, p = quote(user or self.user, safe=""), quote(password or self.password, safe="")
        return f"http://{u}:{p}@127.0.0.1:{self.port}/{name}.git"

    def publish(self, work_tree: Path, name: str) -> Path:
        """Serve the repository at *work_tree* (its current branches) as ``NAME.git``."""
        bare = self.root / f"{name}.git"
        if bare.exists():
            shutil.rmtree(bare)
        subprocess.run(["git", "clone", "--bare", "--quiet", str(work_tree), str(bare)], check=True)
        subprocess.run(["git", "--git-dir", str(bare), "update-server-info"], check=True)
        return bare

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def __enter__(self) -> GitHTTP:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        owner = self
        expected = "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:  # quiet
                pass

            def _send(self, code: int, body: bytes, **headers: str) -> None:
                self.send_response(code)
                for k, v in headers.items():
                    self.send_header(k.replace("_", "-"), v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def do_GET(self) -> None:
                owner.requests += 1
                if owner.broken:
                    self._send(500, b"broken\n")
                    return
                given = self.headers.get("Authorization", "")
                if not hmac.compare_digest(given.encode(), expected.encode()):
                    owner.refused += 1
                    self._send(401, b"login required\n", WWW_Authenticate='Basic realm="git"')
                    return
                rel = unquote(urlsplit(self.path).path).lstrip("/")
                path = (owner.root / rel).resolve()
                if owner.root.resolve() not in path.parents or not path.is_file():
                    self._send(404, b"not found\n")
                    return
                self._send(200, path.read_bytes(), Content_Type="application/octet-stream")

            do_HEAD = do_GET

        return Handler


__all__ = ["GitHTTP"]
