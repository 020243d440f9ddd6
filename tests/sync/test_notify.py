"""Notifications (config ``notify:``) from the command line, to a real HTTP receiver on loopback: a failing run
and its recovery, an SLO breach announced once, a dead receiver that neither fails nor slows the run, and a
webhook URL's secret never printed."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from test_sync_support import Env

SECRET = "T0001/B0002/Zs3cr3tWebhookPart"


class Receiver:
    """An HTTP server that keeps every JSON body POSTed to it."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        received = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/services/{SECRET}"

    def events(self) -> list[str]:
        return [p["event"] for p in self.posts]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


def _config(env: Env, url: str, **extra: Any) -> Path:
    path = env.root / "hubmirror.yaml"
    cfg = {"notify": [{"url": url, "events": extra.pop("events", ["failure", "recovery", "slo_breach"])}], **extra}
    path.write_text(json.dumps(cfg))  # JSON is YAML
    return path


def _list(env: Env, *refs: str) -> Path:
    path = env.root / "images.list"
    path.write_text("".join(f"{r}\n" for r in refs))
    return path


def test_a_failing_run_then_its_recovery_are_notified_once_each(env: Env, receiver: Receiver) -> None:
    env.seed(repos=["tiny"])
    config = _config(env, receiver.url)
    refs = _list(env, "docker.io/library/tiny:1.0", "docker.io/library/nosuch:1")
    bad = env.cli("--config", str(config), "--list", str(refs))
    assert bad.returncode == 1
    assert receiver.events() == ["failure"]
    failure = receiver.posts[0]
    assert failure["exit_code"] == 1 and failure["failed"] >= 1
    assert "nosuch" in failure["text"] and any("nosuch" in f["source"] for f in failure["failures"])
    assert SECRET not in bad.stderr + bad.stdout

    good = env.cli("--config", str(config), "--list", str(_list(env, "docker.io/library/tiny:1.0")))
    assert good.returncode == 0, good.stderr
    assert receiver.events() == ["failure", "recovery"]
    assert receiver.posts[1]["exit_code"] == 0

    again = env.cli("--config", str(config), "--list", str(_list(env, "docker.io/library/tiny:1.0")))
    assert again.returncode == 0
    assert receiver.events() == ["failure", "recovery"]  # a good run after a good one: nothing to say


def test_work_pending_longer_than_the_objective_is_announced_once(env: Env, receiver: Receiver) -> None:
    env.seed(repos=["tiny"])
    env.hub.set_limit(100, remaining=0)  # the quota is spent: the work is deferred
    config = _config(env, receiver.url, freshness_slo="1s")
    refs = _list(env, "docker.io/library/tiny:1.0")
    first = env.cli("--config", str(config), "--list", str(refs))
    assert first.returncode not in (0, 1), first.stderr  # deferred
    assert receiver.events() == []
    time.sleep(1.2)
    second = env.cli("--config", str(config), "--list", str(refs))
    assert second.returncode == first.returncode
    assert receiver.events() == ["slo_breach"]
    [lagging] = receiver.posts[0]["lagging"]
    assert lagging["repository"] == env.key("tiny") and lagging["tags"] == 1
    third = env.cli("--config", str(config), "--list", str(refs))
    assert third.returncode == first.returncode
    assert receiver.events() == ["slo_breach"]  # once per breach

    env.hub.refill()
    done = env.cli("--config", str(config), "--list", str(refs))
    assert done.returncode == 0, done.stderr
    assert receiver.events() == ["slo_breach"]  # never failed: no recovery to announce


def test_a_dead_receiver_neither_fails_nor_slows_the_run_and_its_secret_is_not_printed(env: Env) -> None:
    env.seed(repos=["tiny"])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = f"http://127.0.0.1:{port}/services/{SECRET}"
    config = _config(env, dead, events=["success", "failure"])
    started = time.monotonic()
    out = env.cli("--config", str(config), "--list", str(_list(env, "docker.io/library/tiny:1.0")))
    took = time.monotonic() - started
    assert out.returncode == 0, out.stderr
    assert took < 30
    assert "not delivered" in out.stderr and f"http://127.0.0.1:{port}/…" in out.stderr
    assert SECRET not in out.stderr + out.stdout


def test_a_notify_entry_without_an_http_url_is_one_line_without_the_url(env: Env) -> None:
    config = _config(env, f"ftp://example.invalid/{SECRET}")
    out = env.cli("--config", str(config), "--list", str(_list(env, "docker.io/library/tiny:1.0")))
    assert out.returncode == 1
    assert "notify[0].url" in out.stderr and "http://" in out.stderr
    assert SECRET not in out.stderr
