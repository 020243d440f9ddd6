"""What ``hubmirror serve`` and ``hubmirror sync`` log about their runs, read as an operator reads it: the
log of a real ``hubmirror serve`` subprocess (journald, ``kubectl logs``) in text and in JSON (every line
parsed), with a failing run and a deferred run; and what ``sync --wait`` says while it waits for the quota.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from test_serve import TOKEN, serving
from test_sync_support import Env

from hubmirror.report import Outcome, SyncReport


def _json_lines(text: str) -> list[dict[str, Any]]:
    lines = [line for line in text.splitlines() if line.strip()]
    out = []
    for line in lines:
        try:
            obj = json.loads(line)
        except ValueError:
            raise AssertionError(f"not a JSON object: {line!r}\nwhole log:\n{text}") from None
        assert isinstance(obj, dict), line
        assert {"time", "level", "logger", "message"} <= obj.keys(), line
        out.append(obj)
    return out


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_serve_logs_each_run_its_failed_items_and_deferrals(env: Env, fmt: str) -> None:
    env.seed()
    images = env.root / "images.list"
    missing = f"{env.hub.host}/library/nosuch:1"
    images.write_text(missing + "\n")
    args = ("--log-format", "json") if fmt == "json" else ()
    with serving(
        env,
        extra_env={"HUBMIRROR_API_TOKEN": TOKEN},
        args=args,
        max_pulls=4,
        images=["pyish", "tiny"],
        list=str(images),
    ) as srv:
        srv.idle(1)  # run 1: the missing image fails, --max-pulls defers the rest
        first = SyncReport.from_json((env.root / "report.json").read_text())
        assert first.exit_code == 1 and first.deferred()
        images.write_text("")  # run 2: nothing fails; the budget still defers
        code, _ = srv.request("POST", "/api/sync", b"", {"Authorization": f"Bearer {TOKEN}"})
        assert code == 202
        srv.idle(2)
        second = SyncReport.from_json((env.root / "report.json").read_text())
        assert second.exit_code == 75
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(timeout=60) == 0
    text = srv.log.read_text()

    if fmt == "text":
        lines = text.splitlines()
        assert any(
            re.search(r" INFO hubmirror\.server: listening on http://127\.0\.0\.1:\d+/$", line) for line in lines
        )
        assert any(line.endswith("run 1 started (start)") for line in lines), text
        assert any(line.endswith("run 2 started (api)") for line in lines), text
        failed = [line for line in lines if f"run 1: failed {missing}" in line]
        assert len(failed) == 1 and " WARNING " in failed[0] and "not found" in failed[0], text
        assert re.search(r"run 1: \d+ items deferred to the next run, e\.g\. \S+: ", text), text
        end1 = next(line for line in lines if "run 1 finished:" in line)
        assert " ERROR " in end1 and "failed, exit code 1 (start)" in end1
        assert f"{first.totals.manifest_gets} pulls" in end1
        assert f"{len(first.by_outcome(Outcome.DEFERRED))} deferred, 1 failed" in end1
        end2 = next(line for line in lines if "run 2 finished:" in line)
        assert " WARNING " in end2 and "deferred, exit code 75 (api)" in end2 and " 0 failed" in end2
        assert any(re.search(r"stopping at \d{4}-\d\d-\d\dT", line) for line in lines)
        return

    objs = _json_lines(text)
    events = [o.get("event") for o in objs]
    assert events[0] == "listening" and events[-1] == "stopping", events
    started = [o for o in objs if o.get("event") == "run_started"]
    assert [(o["run"], o["reason"], o["triggers"]) for o in started] == [(1, "start", ["start"]), (2, "api", ["api"])]
    assert started[0]["library"] == str(env.library_repo) and started[0]["dest"] == env.dest_prefix
    failed = [o for o in objs if o.get("event") == "item_failed"]
    assert [(o["run"], o["source"], o["level"]) for o in failed] == [(1, missing, "warning")]
    assert "not found" in failed[0]["reason"] and failed[0]["dest"] == env.key("library/nosuch")
    deferred = {o["run"]: o for o in objs if o.get("event") == "items_deferred"}
    assert deferred[1]["count"] == len(first.by_outcome(Outcome.DEFERRED))
    assert deferred[2]["count"] > 0 and deferred[2]["reason"]
    finished = {o["run"]: o for o in objs if o.get("event") == "run_finished"}
    for n, report in ((1, first), (2, second)):
        f = finished[n]
        assert f["exit_code"] == report.exit_code and f["outcome"] == {1: "failed", 2: "deferred"}[n]
        assert (f["pulls"], f["bytes"]) == (report.totals.manifest_gets, report.totals.bytes)
        assert f["deferred"] == deferred[n]["count"] and f["failed"] == (1 if n == 1 else 0)
        assert f["duration"] >= 0 and f["run_id"] == report.run_id
        assert f["level"] == ("error" if n == 1 else "warning")
        assert datetime.fromisoformat(f["began"]) <= datetime.fromisoformat(f["time"])


def test_serve_logs_a_run_that_cannot_start_and_never_logs_the_library_url_credentials(env: Env) -> None:
    url = "https://hubmirror-user:s3cret-token@127.0.0.1:9/official-images.git"
    with serving(env, args=("--log-format", "json"), library=url) as srv:
        srv.idle(1)
    objs = _json_lines(srv.log.read_text())
    assert "s3cret-token" not in srv.log.read_text() and "hubmirror-user" not in srv.log.read_text()
    started = next(o for o in objs if o.get("event") == "run_started")
    assert started["library"] == "https://***@127.0.0.1:9/official-images.git"
    finished = next(o for o in objs if o.get("event") == "run_finished")
    assert (finished["outcome"], finished["exit_code"], finished["level"]) == ("error", 1, "error")
    assert finished["error"]


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_sync_wait_says_what_it_waits_for_and_when_it_resumes(env: Env, fmt: str) -> None:
    env.seed(repos=["tiny"])
    # Spent down to the reserve; the window refills in 5 s (the run reaches its copy well before that).
    env.hub.set_limit(20, remaining=5, window=5)
    args = ["--images", "tiny", "--wait", *(["--log-format", "json"] if fmt == "json" else [])]
    before = datetime.now(UTC).replace(microsecond=0)
    p = env.cli(*args, timeout=60)
    assert p.returncode == 0, p.stderr
    if fmt == "text":
        m = re.search(
            r"waiting for the pull quota: the next copy needs (\d+) pulls, 5 left \(keeping 5\);"
            r" looking again at (\d\d:\d\d:\d\d) UTC, resuming by (\d\d:\d\d:\d\d) UTC at the latest",
            p.stderr,
        )
        assert m, p.stderr
        assert int(m.group(1)) > 0
        assert re.search(r"pull quota: \d+ left; resuming after waiting \d+ s for \d+ pulls", p.stderr), p.stderr
        return
    objs = _json_lines(p.stderr)
    wait = next(o for o in objs if o.get("event") == "quota_wait")
    assert wait["state"] == "waiting" and wait["needed"] > 0 and wait["remaining"] == 5 and wait["reserve"] == 5
    since, check, by = (datetime.fromisoformat(wait[k]) for k in ("since", "next_check", "resume_by"))
    assert before <= since <= check <= by and (by - since).total_seconds() == 5
    resumed = next(o for o in objs if o.get("event") == "quota_resumed")
    assert resumed["state"] == "resumed" and resumed["waited"] >= 5
    finished = next(o for o in objs if o.get("event") == "run_finished")
    assert (finished["outcome"], finished["exit_code"]) == ("completed", 0)
    assert [o.get("event") for o in objs].index("quota_wait") < [o.get("event") for o in objs].index("run_finished")


def test_sync_daemon_logs_its_runs_and_the_next_one_as_json(env: Env) -> None:
    env.seed(repos=["tiny"])
    config = env.root / "daemon.yaml"
    config.write_text("schedule: '0 0 1 1 *'\nimages: [tiny]\n")
    log = env.root / "daemon.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*env.cli_args("--config", str(config), "--daemon", "--log-format", "json")],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env.cli_env(),
            text=True,
        )
    try:
        deadline = time.monotonic() + 60
        while '"event": "next_run"' not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    objs = _json_lines(log.read_text())
    assert [o.get("event") for o in objs] == ["run_started", "run_finished", "next_run"]
    assert objs[0]["reason"] == "schedule"
    assert (objs[1]["outcome"], objs[1]["exit_code"], objs[1]["failed"]) == ("completed", 0, 0)
    assert objs[2]["exit_code"] == 0 and datetime.fromisoformat(objs[2]["at"]) > datetime.now(UTC)
