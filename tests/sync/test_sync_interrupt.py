"""Ctrl-C and SIGTERM during ``hubmirror sync`` (issue 14, item 4), from the command line: a real
``docker-registry`` as the destination, the Hub emulator holding every blob download (`HubEmulator.set_delay`)
so that the signal arrives while an item is in flight.

The first signal stops the run as SIGTERM stops ``serve``: the item in flight finishes and its tags are
recorded, the copies not started are deferred, the report is written and the exit code is the report's
(work was deferred). A second signal aborts: exit 130, and every tag at the destination is still known to
the state (recorded, or its push begun), so the next run makes every one of them hubmirror's.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from test_sync_support import NAMESPACE, Env, env_fixture  # noqa: F401  (the `env` fixture)

from hubmirror.report import Outcome, SyncReport
from hubmirror.state import State

#: The exit code of an aborted run (`hubmirror.service.ABORTED`).
ABORTED = 130


def start(env: Env, *args: str, report: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        env.cli_args("--images", "pyish,tiny", "--concurrency", "1", "--report", str(report), *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env.cli_env(),
    )


def wait_in_flight(env: Env, proc: subprocess.Popen[str]) -> None:
    """Until the run holds at its first blob download (an item in flight)."""
    deadline = time.monotonic() + 60
    while env.hub.blob_gets() == 0:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no blob download began"
        time.sleep(0.02)  # a poll of the emulator, not a timing assumption
    time.sleep(0.3)  # the download is held by the emulator: the item stays in flight


def signal_in_flight(env: Env, proc: subprocess.Popen[str], *signals: signal.Signals, release: bool) -> str:
    """Send *signals* (half a second apart) once an item is in flight; with *release*, the held download then
    goes on (the item can finish). The run's standard error, once it ended (killed if the test failed)."""
    try:
        wait_in_flight(env, proc)
        for sig in signals:
            proc.send_signal(sig)
            time.sleep(0.5)  # the signal is handled while the item still holds
        if release:
            env.hub.set_delay(0)
        _, err = proc.communicate(timeout=60)
    finally:
        env.hub.set_delay(0)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return err


def dest_tags(env: Env) -> dict[tuple[str, str], str]:
    """(state name of the repository, tag) → digest of every tag at the destination."""
    out = {}
    for repo in ("pyish", "tiny"):
        for tag in env.dest_tags(repo):
            digest = env.dest_digest(repo, tag)
            assert digest is not None
            out[(env.key(repo), tag)] = digest
    return out


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_finishes_the_item_in_flight_records_it_and_defers_the_rest(env: Env, sig: signal.Signals) -> None:
    env.seed()
    env.hub.set_delay(3600)
    report_file = env.root / "report.json"
    proc = start(env, report=report_file)
    err = signal_in_flight(env, proc, sig, release=True)

    text = " ".join(err.split())
    assert f"interrupted ({sig.name}): finishing 1 item in flight; Ctrl-C again to abort" in text, err
    assert "Traceback" not in err
    report = SyncReport.from_json(report_file.read_text())  # written, as after any run
    assert report.by_outcome(Outcome.COPIED), err  # the item in flight finished
    deferred = report.by_outcome(Outcome.DEFERRED)
    assert deferred and all("interrupted" in (i.reason or "") for i in deferred), deferred
    assert report.by_outcome(Outcome.FAILED) == []
    assert proc.returncode == report.exit_code not in (0, 1, ABORTED)  # the deferred code
    assert f"deferred to the next run (exit code {proc.returncode})" in text, err

    # Every tag at the destination is recorded, as hubmirror's; the rest is deferred and taken first next.
    at_dest = dest_tags(env)
    assert at_dest
    with State.open(env.state_path) as state:
        recorded = {(r.dest_repo, r.tag): r for r in state.tags()}
        assert state.intents() == []
        assert state.deferred()
        assert state.runs(1)[0].status == "deferred"
    assert {k: r.dest_digest for k, r in recorded.items()} == at_dest
    assert all(r.created_by_hubmirror for r in recorded.values())

    again = env.cli("--images", "pyish,tiny")
    assert again.returncode == 0, again.stderr


def test_a_second_ctrl_c_aborts_with_every_pushed_tag_known(env: Env) -> None:
    env.seed()
    env.hub.set_delay(3600)
    report_file = env.root / "report.json"
    proc = start(env, report=report_file)
    err = signal_in_flight(env, proc, signal.SIGINT, signal.SIGINT, release=False)

    assert proc.returncode == ABORTED, err
    text = " ".join(err.split())
    assert "Ctrl-C again to abort" in text and "aborting: tags already pushed stay recorded" in text, err
    assert "Traceback" not in err
    assert not report_file.exists()
    with State.open(env.state_path) as state:
        known = {(r.dest_repo, r.tag): r.dest_digest for r in [*state.tags(), *state.intents()]}
        assert state.runs(1)[0].status == "interrupted"
    assert all(known.get(k) == d for k, d in dest_tags(env).items())

    again = env.cli("--images", "pyish,tiny")
    assert again.returncode == 0, again.stderr
    with State.open(env.state_path) as state:
        assert state.intents() == []
        assert all(r.created_by_hubmirror for r in state.tags())


def test_sigterm_stops_the_daemon_after_its_run_finished_the_items_in_flight(env: Env) -> None:
    env.seed()
    env.hub.set_delay(3600)
    config = env.root / "hubmirror.yaml"
    config.write_text("schedule: '0 0 1 1 *'\n")
    report_file = env.root / "report.json"
    proc = start(env, "--config", str(config), "--daemon", report=report_file)
    err = signal_in_flight(env, proc, signal.SIGTERM, release=True)

    assert proc.returncode == 0, err  # a daemon asked to stop, as `serve` on SIGTERM
    assert "interrupted (SIGTERM): finishing 1 item in flight" in " ".join(err.split()), err
    report = json.loads(report_file.read_text())
    assert report["counts"]["copied"] >= 1 and report["counts"]["deferred"] >= 1
    with State.open(env.state_path) as state:
        recorded = {(r.dest_repo, r.tag): r.dest_digest for r in state.tags()}
    assert recorded == dest_tags(env)
    assert f"{env.dest.host}/{NAMESPACE}" in report["dest"]


def test_a_signal_while_planning_stops_at_once_and_changes_nothing(env: Env) -> None:
    env.seed()
    env.hub.abuse(10_000, retry_after=5)  # every HEAD of the plan is told to come back in 5 s
    report_file = env.root / "report.json"
    proc = start(env, report=report_file)
    try:
        deadline = time.monotonic() + 60
        while not any(r.status == 429 for r in env.hub.records):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the plan sent no HEAD"
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        env.hub.abuse(0)
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    assert proc.returncode == ABORTED, err
    assert "interrupted (SIGINT) while planning: nothing was changed" in " ".join(err.split()), err
    assert "Traceback" not in err
    assert env.hub.manifest_gets() == 0 and not report_file.exists()
    with State.open(env.state_path) as state:
        assert state.runs() == [] and state.tags() == []
