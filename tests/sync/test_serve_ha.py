"""Highly available ``hubmirror serve`` (issue 15 items 5 and 7): two replicas, real subprocesses on one real
PostgreSQL state, with the Hub emulator and a real registry.

The replicas agree on one scheduler (a PostgreSQL advisory lock); a trigger on the replica that does not
schedule reaches the one that does (through the state), and the run shows in both replicas' status; the
scheduler SIGKILLed, the other takes over within 60 s and runs the next triggered and scheduled runs.
"""

from __future__ import annotations

import json
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from test_serve import PUSH, SECRET, TOKEN, Serve, serving
from test_sync_support import Env

from hubmirror.server import ELECTED_REASON
from hubmirror.state import MAX_PENDING_TRIGGERS, State
from hubmirror.testing.postgres import PostgresServer

#: Failover must take at most this (issue 15 item 5).
FAILOVER = 60.0
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
SECRETS = {"HUBMIRROR_API_TOKEN": TOKEN, "HUBMIRROR_WEBHOOK_SECRET": SECRET}


def test_triggers_wait_in_the_state_merged_bounded_and_taken_once(where: str) -> None:
    with State.open(where) as st:
        assert st.add_trigger("job", "api", None, "a") == 1
        assert st.add_trigger("job", "api", None, "b") == 2  # the same trigger: one row, counted
        assert st.add_trigger("job", "api: tiny", ["tiny"], "b") == 3
        assert st.add_trigger("other", "api", None, "a") == 1  # another job's scheduler takes its own
        assert st.pending_triggers("job") == [("api", None, 2), ("api: tiny", ["tiny"], 1)]
        assert st.take_triggers("job") == [("api", None, 2), ("api: tiny", ["tiny"], 1)]
        assert st.take_triggers("job") == [] and st.pending_triggers("other") == [("api", None, 1)]
        for i in range(MAX_PENDING_TRIGGERS):
            assert st.add_trigger("job", f"push {i}", None, "a") == i + 1
        assert st.add_trigger("job", "push new", None, "a") is None  # bounded: refused, nothing added
        assert st.add_trigger("job", "push 7", None, "a") == MAX_PENDING_TRIGGERS + 1  # a known one still counts
        assert len(st.take_triggers("job")) == MAX_PENDING_TRIGGERS

        # A webhook delivery is remembered with its trigger: the same delivery again (another replica, a
        # retry) adds nothing; the keys of the newest `remember` are kept.
        assert st.add_trigger("job", "push a", None, "a", deliveries=["delivery:1", "body:aa"], remember=2) == 1
        assert st.add_trigger("job", "push a", None, "b", deliveries=["delivery:1", "body:aa"], remember=2) == 0
        assert st.add_trigger("job", "push b", None, "b", deliveries=["delivery:2", "body:aa"], remember=2) == 0
        assert st.add_trigger("job", "push c", None, "b", deliveries=["delivery:3", "body:cc"], remember=2) == 2
        assert st.pending_triggers("job") == [("push a", None, 1), ("push c", None, 1)]
        assert st.add_trigger("job", "push a", None, "b", deliveries=["delivery:1"], remember=2) == 3  # forgotten
        # Too many waiting: refused, and its delivery is not remembered (GitHub's retry may get in later).
        st.take_triggers("job")
        for i in range(MAX_PENDING_TRIGGERS):
            st.add_trigger("job", f"push {i}", None, "a")
        assert st.add_trigger("job", "push d", None, "a", deliveries=["delivery:4"]) is None
        st.take_triggers("job")
        assert st.add_trigger("job", "push d", None, "a", deliveries=["delivery:4"]) == 1


def test_one_scheduler_per_job_until_its_connection_ends(postgres: PostgresServer) -> None:
    where = postgres.new_database()
    with State.open(where) as a, State.open(where) as b:
        assert a.scheduler("job") is None
        assert a.lead_scheduler("job", "replica-a") and a.leads_scheduler("job")
        assert a.lead_scheduler("job", "replica-a")  # again: still the one (re-entrant)
        assert not b.lead_scheduler("job", "replica-b") and not b.leads_scheduler("job")
        assert b.lead_scheduler("another job", "replica-b")  # one scheduler per job
        assert b.scheduler("job") == "replica-a" and a.scheduler("another job") == "replica-b"
        a.close()  # the connection ends: PostgreSQL releases the lock (once its backend has seen the end)
        deadline = time.monotonic() + 30
        while not b.lead_scheduler("job", "replica-b"):
            assert time.monotonic() < deadline, "the lock of a closed connection was not released"
            time.sleep(0.05)
        assert b.scheduler("job") == "replica-b"


def test_a_sqlite_state_has_one_scheduler_without_election(tmp_path: Path) -> None:
    with State.open(tmp_path / "state.db") as st:
        assert st.lead_scheduler("job", "x") and st.leads_scheduler("job") and st.scheduler("job") is None


def events(srv: Serve, event: str) -> list[dict[str, Any]]:
    """The log lines (``--log-format json``) of *srv* for *event*, in order."""
    out = []
    for line in srv.log.read_text().splitlines():
        if line.startswith("{"):
            rec = json.loads(line)
            if rec.get("event") == event:
                out.append(rec)
    return out


def finished(srv: Serve, reason: str, *, timeout: float = 120) -> dict[str, Any]:
    """Wait for *srv* to log the end of a run one of whose triggers begins with *reason*; that log record."""
    deadline = time.monotonic() + timeout
    while True:
        assert srv.proc.poll() is None, srv.log.read_text()
        done = [
            e for e in events(srv, "run_finished") if any(t.startswith(reason) for t in e.get("reason", "").split(", "))
        ]
        if done:
            return done[-1]
        assert time.monotonic() < deadline, f"no run for {reason!r} finished:\n{srv.log.read_text()[-4000:]}"
        time.sleep(0.2)


def leader_of(replicas: list[Serve], *, timeout: float = FAILOVER) -> tuple[Serve, Serve]:
    """Wait until the two replicas agree that one of them schedules: (the scheduler, the other)."""
    deadline = time.monotonic() + timeout
    while True:
        states = [r.status()["scheduler"] for r in replicas]
        leaders = [i for i, s in enumerate(states) if s["leader"]]
        if len(leaders) == 1:
            lead = leaders[0]
            other = 1 - lead
            if states[other]["scheduler"] == states[lead]["replica"] and not states[other]["leader"]:
                return replicas[lead], replicas[other]
        assert len(leaders) <= 1, states
        assert time.monotonic() < deadline, f"no single scheduler: {states}"
        time.sleep(0.2)


def test_two_replicas_elect_one_scheduler_triggers_reach_it_and_the_other_takes_over_after_sigkill(
    env: Env, postgres: PostgresServer
) -> None:
    env.seed()
    where = postgres.new_database()
    with ExitStack() as stack:
        replicas = [
            stack.enter_context(serving(env, extra_env=SECRETS, flags=("--log-format", "json"), state=where))
            for _ in range(2)
        ]
        lead, other = leader_of(replicas)
        assert lead.metrics()["hubmirror_scheduler_leader"] == 1
        assert other.metrics()["hubmirror_scheduler_leader"] == 0
        first = finished(lead, ELECTED_REASON)  # a new scheduler runs at once, as a lone server at start
        assert first["exit_code"] == 0
        assert not events(other, "run_started")  # the other replica never runs

        # A trigger on the replica that does not schedule: 202, and the scheduler runs it.
        env.seed(repos=["tiny"], generation={"tiny": {"1.0": 1}})  # rebuilt upstream
        code, body = other.request("POST", "/api/sync", json.dumps({"repositories": ["tiny"]}).encode(), AUTH)
        assert code == 202, body
        assert json.loads(body)["run"] == "queued" and json.loads(body)["repositories"] == ["tiny"]
        run = finished(lead, "api: tiny")
        assert run["exit_code"] == 0 and run["run_id"] != first["run_id"]
        assert env.dest_digest("tiny", "1.0") == env.indexes("tiny", generation={"1.0": 1})["1.0"].digest
        # The run is in both replicas' status (the runs of the state), and the page says who schedules.
        for srv in (lead, other):
            runs = {r["id"]: r for r in srv.status()["runs"]}
            assert runs[run["run_id"]]["status"] == "completed"
        code, page = other.request("GET", "/")
        assert code == 200 and b"schedules the runs" in page
        assert not events(other, "run_started")

        # A signed push on that replica reaches the scheduler too; a replay of it starts nothing, on either.
        assert other.webhook({**PUSH, "after": "c" * 40})[0] == 202
        assert other.webhook({**PUSH, "after": "c" * 40})[0] == 200
        code, body = lead.webhook({**PUSH, "after": "c" * 40})
        assert (code, json.loads(body)["ignored"]) == (200, "a delivery already received")
        finished(lead, "push docker-library/official-images")

        # SIGKILL the scheduler: the other takes over within FAILOVER seconds, with nothing lost.
        killed = time.monotonic()
        lead.proc.kill()
        lead.proc.wait(timeout=30)
        other.wait("this replica to schedule", lambda s: s["scheduler"]["leader"], timeout=FAILOVER)
        failover = time.monotonic() - killed
        print(f"failover: {failover:.1f} s after SIGKILL")
        assert failover < FAILOVER
        assert other.metrics()["hubmirror_scheduler_leader"] == 1
        finished(other, ELECTED_REASON)

        # The next triggered run is the survivor's.
        env.seed(repos=["tiny"], generation={"tiny": {"1.0": 2}})
        code, body = other.request("POST", "/api/sync", json.dumps({"repositories": ["tiny"]}).encode(), AUTH)
        assert code == 202, body
        assert finished(other, "api: tiny")["exit_code"] == 0
        assert env.dest_digest("tiny", "1.0") == env.indexes("tiny", generation={"1.0": 2})["1.0"].digest
        st = other.status()
        assert st["scheduler"]["scheduler"] == st["scheduler"]["replica"]


def test_the_replica_left_runs_the_next_scheduled_run_after_the_scheduler_is_killed(
    env: Env, postgres: PostgresServer
) -> None:
    env.seed()
    where = postgres.new_database()
    with ExitStack() as stack:
        replicas = [
            stack.enter_context(
                serving(env, flags=("--log-format", "json"), state=where, schedule="* * * * * */15", images=["tiny"])
            )
            for _ in range(2)
        ]
        lead, other = leader_of(replicas)
        finished(lead, "schedule", timeout=120)  # the schedule (every 15 s) is the scheduler's
        assert not events(other, "run_started")
        assert other.status()["next_run"] is not None  # … and every replica shows when it runs next

        killed = time.monotonic()
        lead.proc.kill()
        lead.proc.wait(timeout=30)
        other.wait("this replica to schedule", lambda s: s["scheduler"]["leader"], timeout=FAILOVER)
        print(f"failover: {time.monotonic() - killed:.1f} s after SIGKILL")
        assert time.monotonic() - killed < FAILOVER
        run = finished(other, "schedule", timeout=120)
        assert run["exit_code"] == 0
