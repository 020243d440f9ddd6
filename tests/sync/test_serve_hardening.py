"""``hubmirror serve`` against hostile clients (issue 14, items 6–8), a real subprocess each time:

* unsigned or wrongly signed 25 MiB webhook posts, many at once, do not grow the server (its peak RSS, from
  /proc/PID/status, is measured);
* idle and half-sent connections, more than the server's open-file limit, neither stop ``/healthz`` nor
  stay open past the header timeout; a webhook body that trickles is cut off;
* a replayed push starts no second run; a flood of API triggers keeps the pending list and the answers small.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import hmac
import http.client
import json
import os
import resource
import socket
import time
import uuid
from pathlib import Path

from test_serve import PUSH, SECRET, TOKEN, Serve, _copying, serving
from test_sync_support import Env

MIB = 1024 * 1024


def _status_kib(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (peak RSS) … of *pid* in KiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key.startswith("Vm") and value.strip().endswith("kB"):
            out[key] = int(value.split()[0])
    return out


def _port(srv: Serve) -> int:
    return int(srv.url.rsplit(":", 1)[1])


def _post_big(port: int, headers: dict[str, str], size: int) -> int:
    """POST *size* bytes to /hooks/github as fast as the server takes them; the status it answers (0: none,
    the connection was closed)."""
    head = "".join(f"{k}: {v}\r\n" for k, v in {**headers, "Content-Length": str(size)}.items())
    chunk = b"x" * MIB
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(f"POST /hooks/github HTTP/1.1\r\nHost: x\r\n{head}\r\n".encode())
        try:
            for _ in range(size // MIB):
                s.sendall(chunk)
        except OSError:  # the server answered and closed: it stopped reading
            pass
        try:
            answer = s.recv(200)
        except OSError:
            return 0
    return int(answer.split()[1]) if answer.startswith(b"HTTP/1.1 ") else 0


def test_large_unsigned_or_wrongly_signed_webhooks_are_refused_without_growing_the_server(env: Env) -> None:
    env.seed()
    with serving(env, extra_env={"HUBMIRROR_WEBHOOK_SECRET": SECRET}) as srv:
        srv.idle(1)
        before = _status_kib(srv.proc.pid)
        port = _port(srv)
        unsigned = {"X-GitHub-Event": "push", "Content-Type": "application/json"}
        wrong = {**unsigned, "X-Hub-Signature-256": "sha256=" + "0" * 64}
        with concurrent.futures.ThreadPoolExecutor(40) as pool:
            codes = list(pool.map(lambda _: _post_big(port, unsigned, 25 * MIB), range(40)))
            after_unsigned = _status_kib(srv.proc.pid)
            wrong_codes = list(pool.map(lambda _: _post_big(port, wrong, 25 * MIB), range(40)))
        after = _status_kib(srv.proc.pid)
        grew = (after["VmHWM"] - before["VmRSS"]) // 1024
        figures = (
            f"serve RSS before {before['VmRSS'] // 1024} MiB (peak {before['VmHWM'] // 1024} MiB); peak after 40 "
            f"unsigned 25 MiB posts {after_unsigned['VmHWM'] // 1024} MiB; peak after 40 wrongly signed ones "
            f"{after['VmHWM'] // 1024} MiB; now {after['VmRSS'] // 1024} MiB"
        )
        print(figures)
        assert grew < 100, figures
        assert set(codes) <= {401, 0} and codes.count(401) >= 30, codes
        # At most --max-webhook-reads (2) bodies are read at a time (401 after reading, or 408 when they take longer
        # than --body-timeout); the others are refused at once.
        assert set(wrong_codes) <= {401, 408, 503, 0} and wrong_codes.count(503) >= 10, wrong_codes
        code, body = srv.webhook(PUSH)  # a right signature still works
        assert code == 202 and json.loads(body)["run"] in ("started", "queued")
        assert srv.request("GET", "/healthz")[0] == 200


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_idle_and_half_sent_connections_beyond_the_fd_limit_neither_stop_healthz_nor_stay_open(env: Env) -> None:
    env.seed()

    def low_fd_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    flags = ("--header-timeout", "3", "--body-timeout", "2")
    with serving(env, preexec_fn=low_fd_limit, flags=flags, extra_env={"HUBMIRROR_WEBHOOK_SECRET": SECRET}) as srv:
        srv.idle(1)
        port = _port(srv)
        # A webhook body that trickles is cut off after --body-timeout.
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(b"POST /hooks/github HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n")
            s.sendall(f"X-Hub-Signature-256: sha256={'1' * 64}\r\n\r\n{{".encode())
            started = time.monotonic()
            answer = s.recv(200)
            assert answer.startswith(b"HTTP/1.1 408"), answer
            assert 1.5 < time.monotonic() - started < 10
        held: list[socket.socket] = []
        try:
            for i in range(400):  # more than the server's 256 descriptors
                s = socket.create_connection(("127.0.0.1", port), timeout=10)
                if i % 2:  # half a request head, never finished
                    s.sendall(b"GET /api/status HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                held.append(s)
            opened = time.monotonic()
            # /healthz answers at once, again and again, while they are held.
            for _ in range(5):
                t = time.monotonic()
                assert srv.request("GET", "/healthz")[0] == 200
                assert time.monotonic() - t < 2
            assert srv.status()["server"]["stopping"] is False
            assert _fds(srv.proc.pid) < 128 + 40  # at most 128 connections under this limit
            # After the header timeout every one of them is closed by the server.
            closed = 0
            for s in held:
                s.settimeout(max(0.1, opened + 10 - time.monotonic()))
                try:
                    data = s.recv(100)
                except ConnectionResetError:
                    data = b""
                except TimeoutError:
                    continue
                if data == b"" or data.startswith(b"HTTP/1.1 503"):
                    closed += 1
            assert closed == len(held)
            assert time.monotonic() - opened >= 2.5  # not before the timeout (3 s for the newest ones)
        finally:
            for s in held:
                s.close()
        assert srv.request("GET", "/healthz")[0] == 200
        deadline = time.monotonic() + 10
        while _fds(srv.proc.pid) > 40:
            assert time.monotonic() < deadline, f"{_fds(srv.proc.pid)} descriptors still open"
            time.sleep(0.2)


def _signed(payload: dict[str, object], delivery: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(payload).encode()
    sig = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return body, {"X-GitHub-Event": "push", "X-Hub-Signature-256": sig, "X-GitHub-Delivery": delivery}


def test_a_replayed_push_starts_no_second_run_and_a_trigger_flood_keeps_the_queue_and_answers_small(
    env: Env,
) -> None:
    env.seed()
    secrets = {"HUBMIRROR_WEBHOOK_SECRET": SECRET, "HUBMIRROR_API_TOKEN": TOKEN}
    with serving(env, extra_env=secrets) as srv:
        srv.idle(1)
        # One push delivered 5 times (GitHub's retry, a replay), then under another delivery id: one run.
        body, headers = _signed(PUSH, str(uuid.uuid4()))
        answers = [srv.request("POST", "/hooks/github", body, headers) for _ in range(5)]
        answers.append(srv.request("POST", "/hooks/github", body, {**headers, "X-GitHub-Delivery": "other"}))
        assert [code for code, _ in answers] == [202] + [200] * 5, answers
        assert all("already received" in json.loads(b)["ignored"] for _, b in answers[1:])
        srv.idle(2)
        time.sleep(1.0)
        assert srv.status()["server"]["runs_started"] == 2

        # A flood of API triggers during a run: one follow-up run, a bounded pending list, small answers.
        env.seed(repos=["tiny"], generation={"tiny": {"1.0": 1}})  # rebuilt upstream: the run copies it
        env.hub.set_delay(3600)  # held until the flood is in
        body, headers = _signed({**PUSH, "after": "b" * 40}, str(uuid.uuid4()))
        assert srv.request("POST", "/hooks/github", body, headers)[0] == 202
        srv.wait("run 3 copying", _copying)
        conn = http.client.HTTPConnection("127.0.0.1", _port(srv), timeout=30)
        sizes = set()
        for _ in range(3000):
            conn.request("POST", "/api/sync", b"", {"Authorization": f"Bearer {TOKEN}"})
            resp = conn.getresponse()
            data = resp.read()
            assert resp.status == 202
            sizes.add(len(data))
        conn.close()
        assert max(sizes) < 100, sizes
        st = srv.status()
        assert st["pending_triggers"] == 3000
        assert st["pending"] == ["api (×3000)"]
        assert len(json.dumps(st)) < 20_000
        env.hub.set_delay(0)
        st = srv.idle(4)
        time.sleep(1.0)
        st = srv.status()
        assert st["server"]["runs_started"] == 4 and not st["pending"]
