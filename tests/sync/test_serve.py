"""``hubmirror serve`` as operators run it: a real subprocess against the Hub emulator and a real registry.

The status page is read by Debian's headless chromium (selenium) during and after a sync; webhooks are
signed like GitHub signs them; ``/metrics`` is scraped during a run; SIGTERM stops a run cleanly.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_sync_support import HUBMIRROR, Env, assert_complete

from hubmirror.report import Outcome, SyncReport
from hubmirror.server import SHUTDOWN_REASON
from hubmirror.state import State
from hubmirror.testing.registry import free_port

SECRET = "webhook-secret-for-tests"
TOKEN = "api-token-for-tests"
#: Never fires during a test: runs come from the start and from triggers only.
NEVER = "0 0 1 1 *"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


class Serve:
    """A running ``hubmirror serve`` subprocess and HTTP helpers for it."""

    def __init__(self, proc: subprocess.Popen[str], url: str, log: Path) -> None:
        self.proc, self.url, self.log = proc, url, log

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def status(self) -> dict[str, Any]:
        code, body = self.request("GET", "/api/status")
        assert code == 200, body
        data: dict[str, Any] = json.loads(body)
        return data

    def metrics(self) -> dict[str, float]:
        code, body = self.request("GET", "/metrics")
        assert code == 200
        out = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out

    def wait(self, what: str, cond: Callable[[dict[str, Any]], bool], timeout: float = 90) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, f"hubmirror serve exited {self.proc.returncode}:\n{self.log.read_text()}"
            st = self.status()
            if cond(st):
                return st
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; status: {json.dumps(st)[:2000]}")
            time.sleep(0.1)

    def idle(self, runs: int) -> dict[str, Any]:
        """Wait until *runs* runs have started and none is in progress or queued."""
        return self.wait(
            f"{runs} runs done",
            lambda s: s["server"]["runs_started"] >= runs and s["current"] is None and not s["pending"],
        )

    def webhook(self, payload: dict[str, Any], *, secret: str = SECRET, event: str = "push") -> tuple[int, bytes]:
        body = json.dumps(payload).encode()
        sig = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        return self.request(
            "POST",
            "/hooks/github",
            body,
            {"X-GitHub-Event": event, "X-Hub-Signature-256": sig, "Content-Type": "application/json"},
        )


PUSH = {
    "ref": "refs/heads/master",
    "after": "a" * 40,
    "repository": {"full_name": "docker-library/official-images"},
}


@contextmanager
def serving(
    env: Env,
    *,
    extra_env: dict[str, str] | None = None,
    flags: tuple[str, ...] = (),
    args: tuple[str, ...] = (),
    preexec_fn: Callable[[], None] | None = None,
    **cfg: Any,
) -> Iterator[Serve]:
    """``hubmirror serve --config FILE --listen 127.0.0.1:PORT [FLAGS] [ARGS]`` for *env* (config keys override)."""
    config: dict[str, Any] = {
        "library": str(env.library_repo),
        "source": env.hub.host,
        "dest": env.dest_prefix,
        "state": str(env.state_path),
        "report": str(env.root / "report.json"),
        "schedule": NEVER,
    }
    config.update(cfg)
    path = env.root / "hubmirror.yaml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    log = env.root / f"serve-{port}.log"
    environ = env.cli_env({"XDG_CACHE_HOME": str(env.cache), **(extra_env or {})})
    with log.open("w") as out:
        proc = subprocess.Popen(
            [HUBMIRROR, "serve", "--config", str(path), "--listen", f"127.0.0.1:{port}", *flags, *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=environ,
            text=True,
            preexec_fn=preexec_fn,
        )
    srv = Serve(proc, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"hubmirror serve exited {proc.returncode}:\n{log.read_text()}"
            try:
                if srv.request("GET", "/healthz")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield srv
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _copying(s: dict[str, Any]) -> bool:
    c = s["current"]
    return c is not None and c["phase"] == "copying" and bool(c["in_flight"])


# -- the status page in a real browser -----------------------------------------------------------------


def _chromium() -> Any:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.skip("Debian's chromium and chromium-driver are not installed (scripts/install installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    profile = tempfile.mkdtemp(prefix="hubmirror-chromium-")
    for arg in (
        "--headless",
        "--no-sandbox",  # tests run as root here
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,1300",
        f"--user-data-dir={profile}",
    ):
        opts.add_argument(arg)
    try:
        browser = webdriver.Chrome(options=opts, service=Service(executable_path=driver))
    except Exception as e:
        shutil.rmtree(profile, ignore_errors=True)
        pytest.skip(f"headless chromium cannot start here: {str(e).splitlines()[0]}")
    browser.hubmirror_profile = profile
    return browser


def _shot(browser: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    height = browser.execute_script("return document.body.scrollHeight")
    browser.set_window_size(1280, max(800, int(height) + 40))
    browser.save_screenshot(str(path))
    print(f"screenshot: {path}")
    return path


def test_status_page_in_chromium_and_metrics_during_and_after_a_sync(env: Env) -> None:
    from selenium.webdriver.common.by import By

    env.seed()
    env.hub.set_limit(200, remaining=150)  # partly spent by someone else
    env.hub.set_delay(3600)  # the run holds at its first blobs until released below
    missing = env.root / "images.list"
    missing.write_text(f"{env.hub.host}/library/nosuch:1\n")
    browser = _chromium()
    try:
        # max_pulls leaves work deferred; the list names an image the source does not have (a failure).
        with serving(env, max_pulls=12, concurrency=2, images=["pyish", "tiny"], list=str(missing)) as srv:
            st = srv.wait("a run copying", _copying)
            assert st["runs"][0]["status"] == "running" and st["runs"][0]["exit_code"] is None
            during = srv.metrics()
            assert during["hubmirror_run_in_progress"] == 1
            # The blobs held at the CDN have sizes known from their manifests: bytes of the images begun.
            st = srv.wait("byte totals", lambda s: _copying(s) and s["current"]["bytes_total"] > 0)
            assert 0 <= st["current"]["bytes_done"] < st["current"]["bytes_total"]
            browser.get(srv.url + "/")
            current = browser.find_element(By.ID, "current")
            assert "copying" in current.text
            assert re.fullmatch(
                r"[\d.]+ (bytes|B|kB|MB) of [\d.]+ (kB|MB)", browser.find_element(By.ID, "current-bytes").text
            )
            inflight = browser.find_element(By.ID, "current-inflight").text
            assert re.search(r"\(\S+ (bytes|B|kB) of \S+ (kB|MB)\)", inflight)
            assert browser.find_element(By.CSS_SELECTOR, "#runs .badge.running")
            _shot(browser, "status-during-sync.png")
            # The page updates the run in progress in place (no reload) as items finish.
            first = int(browser.find_element(By.ID, "current-done").text)
            env.hub.set_delay(0)
            deadline = time.monotonic() + 60
            while browser.find_elements(By.ID, "current"):
                assert time.monotonic() < deadline, "the page did not follow the run to its end"
                time.sleep(0.2)
            st = srv.idle(1)
            report = SyncReport.from_json((env.root / "report.json").read_text())
            assert report.exit_code == 1  # a failure (and deferrals)
            run = st["runs"][0]
            assert (run["status"], run["exit_code"], run["pulls"]) == ("failed", 1, report.totals.manifest_gets)
            assert run["started"] and run["finished"]
            assert first <= report.counts()["copied"] + report.counts()["deferred"] + report.counts()["failed"]

            # /metrics: the counters match the run's report.
            m = srv.metrics()
            assert m["hubmirror_run_in_progress"] == 0
            assert m["hubmirror_source_manifest_gets_total"] == report.totals.manifest_gets
            assert m["hubmirror_source_manifest_heads_total"] == report.totals.manifest_heads
            assert m["hubmirror_blob_bytes_written_total"] == report.totals.bytes > 0
            assert m["hubmirror_last_run_exit_code"] == report.exit_code
            assert m['hubmirror_runs_total{exit_code="1"}'] == 1
            for outcome, n in report.counts().items():
                assert m[f'hubmirror_last_run_items{{outcome="{outcome}"}}'] == n
            assert m["hubmirror_source_ratelimit_remaining"] == report.totals.ratelimit_remaining

            # The page after the run: quota, the run, per-repository state with reasons.
            browser.get(srv.url + "/")
            assert not browser.find_elements(By.ID, "current")
            assert browser.find_element(By.ID, "quota-remaining").text == str(env.hub.remaining)
            assert "full refill" in browser.find_element(By.ID, "quota").text
            rows = browser.find_elements(By.CSS_SELECTOR, "#runs tr.run")
            assert len(rows) == 1 and "failed" in rows[0].text and str(report.totals.manifest_gets) in rows[0].text
            repos = {r.get_attribute("data-name"): r for r in browser.find_elements(By.CSS_SELECTOR, "tr.repo")}
            with State.open(env.state_path) as state:
                for name, r in repos.items():
                    assert r.find_element(By.CSS_SELECTOR, "td.num").text == str(len(state.tags(name)))
                deferred = state.deferred()
            assert deferred, "max_pulls should have left work deferred"
            for d in deferred:
                assert "deferred" in repos[d.dest_repo].text and "--max-pulls 12" in repos[d.dest_repo].text
            nosuch = repos[env.key("library/nosuch")]
            assert "failed" in nosuch.find_element(By.CSS_SELECTOR, "li.failed").text
            assert browser.find_element(By.ID, "library-newest").text == env.commits[-1][:12]
            _shot(browser, "status-after-sync.png")

            # Without HUBMIRROR_API_TOKEN, POST /api/sync is disabled and says how to enable it.
            code, body = srv.request("POST", "/api/sync", b"", {"Authorization": f"Bearer {TOKEN}"})
            assert code == 403 and b"HUBMIRROR_API_TOKEN" in body
            assert srv.request("GET", "/readyz")[0] == 200
    finally:
        browser.quit()
        shutil.rmtree(browser.hubmirror_profile, ignore_errors=True)


# -- triggers: webhooks and the API ------------------------------------------------------------------


def test_webhooks_start_one_run_merge_into_one_follow_up_and_bad_signatures_start_nothing(env: Env) -> None:
    env.seed()
    secrets = {"HUBMIRROR_WEBHOOK_SECRET": SECRET, "HUBMIRROR_API_TOKEN": TOKEN}
    with serving(env, extra_env=secrets) as srv:
        srv.idle(1)  # the run at start

        # A bad or missing signature: 401, nothing starts.
        assert srv.webhook(PUSH, secret="wrong")[0] == 401
        body = json.dumps(PUSH).encode()
        assert srv.request("POST", "/hooks/github", body, {"X-GitHub-Event": "push"})[0] == 401
        assert srv.webhook({"zen": "hi"}, event="ping")[0] == 200
        time.sleep(1.0)
        st = srv.status()
        assert st["server"]["runs_started"] == 1 and st["current"] is None and len(st["runs"]) == 1

        # A signed push starts one run.
        code, resp = srv.webhook(PUSH)
        assert code == 202 and json.loads(resp)["run"] == "started"
        st = srv.idle(2)
        assert len(st["runs"]) == 2 and st["runs"][0]["status"] == "completed" and st["runs"][0]["exit_code"] == 0

        # Three pushes during a run: exactly one follow-up run.
        env.seed(repos=["tiny"], generation={"tiny": {"1.0": 1}})  # rebuilt upstream: the run copies it
        env.hub.set_delay(3600)  # held until the three pushes are in
        assert json.loads(srv.webhook({**PUSH, "after": "b" * 40})[1])["run"] == "started"  # another push
        srv.wait("run 3 copying", _copying)
        answers = [json.loads(srv.webhook({**PUSH, "after": f"{i}" * 40})[1])["run"] for i in range(1, 4)]
        assert answers == ["queued", "queued", "queued"]
        assert len(srv.status()["pending"]) == 3
        env.hub.set_delay(0)
        st = srv.idle(4)
        time.sleep(1.5)
        st = srv.status()
        assert st["server"]["runs_started"] == 4 and st["current"] is None
        assert [r["status"] for r in st["runs"]] == ["completed"] * 4

        # POST /api/sync: the bearer token is required.
        assert srv.request("POST", "/api/sync", b"")[0] == 401
        assert srv.request("POST", "/api/sync", b"", {"Authorization": "Bearer nope"})[0] == 401
        code, resp = srv.request("POST", "/api/sync", b"", {"Authorization": f"Bearer {TOKEN}"})
        assert code == 202 and json.loads(resp)["run"] == "started"
        assert len(srv.idle(5)["runs"]) == 5
    assert srv.proc.returncode == 0


# -- SIGTERM ------------------------------------------------------------------------------------------


def test_sigterm_during_a_run_exits_cleanly_keeps_the_state_consistent_and_the_next_start_resumes(env: Env) -> None:
    env.seed()
    env.hub.set_delay(0.4)
    with serving(env, concurrency=1) as srv:
        srv.wait("one item done and one in flight", lambda s: _copying(s) and s["current"]["items_done"] >= 1)
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(timeout=120) == 0, srv.log.read_text()
    first = SyncReport.from_json((env.root / "report.json").read_text())
    with State.open(env.state_path) as state:
        runs = state.runs()
        assert [r.status for r in runs] == ["deferred"]  # finished and recorded, not left "running"
        deferred = state.deferred()
        tags = state.tags()
    assert deferred and all(d.reason == SHUTDOWN_REASON for d in deferred)
    assert first.by_outcome(Outcome.COPIED)  # the items in flight finished
    for t in tags:  # every tag the state records is complete at the destination, with its digest
        repo = t.dest_repo.split("/", 1)[1]
        assert assert_complete(env.dest, repo, t.tag) == t.dest_digest

    env.hub.set_delay(0)
    env.hub.reset_counts()
    with serving(env) as srv:
        st = srv.idle(1)
        assert st["runs"][0]["status"] == "completed"
    second = SyncReport.from_json((env.root / "report.json").read_text())
    copied = {i.source for i in second.by_outcome(Outcome.COPIED)}
    assert copied == {d.source_ref for d in deferred}  # the deferred work, and nothing copied twice
    with State.open(env.state_path) as state:
        assert [r.status for r in state.runs()] == ["completed", "deferred"]
        assert not state.deferred()
        for t in state.tags():
            assert assert_complete(env.dest, t.dest_repo.split("/", 1)[1], t.tag) == t.dest_digest


def test_serve_rejects_a_bad_listen_address_and_a_config_without_dest(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("schedule: '0 */6 * * *'\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUBMIRROR_")}
    p = subprocess.run([HUBMIRROR, "serve", "--config", str(cfg)], capture_output=True, text=True, env=env)
    assert p.returncode == 1 and "no destination" in p.stderr and "Traceback" not in p.stderr
    cfg.write_text("dest: 127.0.0.1:5000/m\n")
    p = subprocess.run(
        [HUBMIRROR, "serve", "--config", str(cfg), "--listen", "localhost"], capture_output=True, text=True, env=env
    )
    assert p.returncode == 1 and "expected HOST:PORT" in p.stderr


async def test_shutdown_cancels_a_run_that_does_not_stop_within_the_grace_and_the_next_run_recovers(env: Env) -> None:
    from hubmirror.server import SyncLoop
    from hubmirror.service import SyncService

    env.seed()
    env.hub.set_delay(3600)  # the items in flight never finish by themselves
    loop = SyncLoop(env.config(), SyncService(cache_dir=env.cache), stop_grace=1.0)
    loop.start()
    deadline = time.monotonic() + 60
    while not (loop.current is not None and loop.current.planned and loop.current.in_flight):
        assert time.monotonic() < deadline, "the run did not start copying"
        await asyncio.sleep(0.05)
    await asyncio.wait_for(loop.shutdown(), 60)
    assert loop.current is None and loop.finished[0].result is None  # cancelled after the grace
    assert loop.trigger("api") == "refused"
    env.hub.set_delay(0)
    with State.open(env.state_path) as state:
        assert [r.status for r in state.runs()] == ["interrupted"]  # the cancelled run says so itself
    _, report = await env.sync()
    assert report.exit_code == 0
    with State.open(env.state_path) as state:
        assert [r.status for r in state.runs()] == ["completed", "interrupted"]
