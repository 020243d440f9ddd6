"""Nothing that was a secret is published (issue 14, items 5 and 9).

A library URL with a token in it (``http://user:TOKEN@host/official-images.git``, served by a real HTTP
server that checks Basic authentication) is used by ``hubmirror sync`` and ``hubmirror serve``; the token
must then appear nowhere: stdout, stderr, the serve log, ``/``, ``/api/status``, ``/metrics``, the report,
the metrics file, the state file (raw bytes, WAL included) and the library cache. A destination that
rejects a credential is named on the status page, the credential's user is not.
"""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import uuid
from pathlib import Path

from test_serve import TOKEN, serving
from test_sync_support import HUBMIRROR, Env

from hubmirror.redact import RedactingFilter, hide_credential_owners, redact_text, redact_url
from hubmirror.registry.auth import Authenticator
from hubmirror.registry.credentials import Credentials
from hubmirror.report import SyncReport
from hubmirror.state import State
from hubmirror.testing.githttp import GitHTTP

BOT = "hubmirror-bot"


def _secret() -> str:
    return f"glpat-{uuid.uuid4().hex}"


def _files_with(root: Path, needle: bytes) -> list[str]:
    """Every file under *root* (or *root* itself) whose raw bytes hold *needle*."""
    paths = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
    return [str(p) for p in paths if needle in p.read_bytes()]


def _sync(env: Env, library: str, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        HUBMIRROR,
        "sync",
        "--library",
        library,
        "--source",
        env.hub.host,
        "--dest",
        env.dest_prefix,
        "--state",
        str(env.state_path),
        "--cache-dir",
        str(env.cache),
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, env=env.cli_env(), timeout=120, check=False)


def test_a_token_in_the_library_url_appears_nowhere_in_sync_serve_state_report_or_metrics(env: Env) -> None:
    token = _secret()
    env.seed()
    seen: list[str] = []  # everything printed or served
    report, prom = env.root / "report.json", env.root / "metrics.prom"
    with GitHTTP(env.root / "git-http", BOT, token) as git:
        git.publish(env.library_repo, "official-images")
        url = git.url("official-images")
        shown = redact_url(url)
        assert token not in shown and shown.startswith("http://***@127.0.0.1:")

        # A first sync clones with the credential (git is refused without it), a second fetches.
        p = _sync(env, url, "--report", str(report), "--metrics-file", str(prom), "--json")
        seen += [p.stdout, p.stderr]
        assert p.returncode == 0, p.stderr
        assert git.refused > 0, "git should have been asked for the credential"
        assert SyncReport.from_json(report.read_text()).library == shown
        assert f"reading the library at {shown}" in p.stderr
        p = _sync(env, url, "--dry-run")
        seen += [p.stdout, p.stderr]
        assert p.returncode == 0, p.stderr
        assert "full reconciliation" not in p.stderr  # the same library as the first run: keyed alike
        with State.open(env.state_path) as state:
            assert state.library_commits() == {shown: env.commits[-1]}
        p = subprocess.run(
            [HUBMIRROR, "status", "--state", str(env.state_path)], capture_output=True, text=True, env=env.cli_env()
        )
        seen += [p.stdout, p.stderr]
        assert shown in p.stderr

        # Failing: a wrong path (git: not found) and a broken server (git: HTTP 500). One line, no token.
        p = _sync(env, git.url("no-such-repo"))
        seen += [p.stdout, p.stderr]
        assert p.returncode == 1 and "no-such-repo" in p.stderr and "Traceback" not in p.stderr
        git.broken = True
        p = _sync(env, url)
        seen += [p.stdout, p.stderr]
        assert p.returncode == 1 and "500" in p.stderr and "Traceback" not in p.stderr
        git.broken = False

        # serve: a run that works, then one the broken server fails; pages, metrics and the log.
        secrets = {"HUBMIRROR_API_TOKEN": TOKEN}
        with serving(env, library=url, extra_env=secrets, metrics_file=str(prom)) as srv:
            st = srv.idle(1)
            assert st["library"]["source"] == shown and st["runs"][0]["status"] == "completed"
            git.broken = True
            assert srv.request("POST", "/api/sync", b"", {"Authorization": f"Bearer {TOKEN}"})[0] == 202
            st = srv.idle(2)
            errors = [r["error"] for r in st["runs"] if r["status"] == "error"]
            assert len(errors) == 1 and "500" in errors[0] and shown in errors[0], errors
            for path in ("/", "/api/status", "/metrics"):
                code, body = srv.request("GET", path)
                assert code == 200
                seen.append(body.decode())
        log = srv.log.read_text()
        assert "run 2 " in log and shown in log  # the failure is logged, with the URL as shown
        seen.append(log)

    leaks = [i for i, text in enumerate(seen) if token in text]
    assert not leaks, [seen[i][:2000] for i in leaks]
    state_files = [env.state_path.with_name(env.state_path.name + s) for s in ("", "-wal", "-shm", ".lock")]
    files = [report, prom, *[f for f in state_files if f.exists()], env.cache]
    assert not [hit for f in files for hit in _files_with(f, token.encode())]


def test_a_state_keyed_by_the_url_with_its_token_is_migrated_keeps_its_commit_and_keeps_no_copy(env: Env) -> None:
    """A state written before (schema 5: the library commit keyed by the URL as given) is migrated: the next
    run sees the same library (no full reconciliation) and the file keeps no byte of the token."""
    token = _secret()
    env.seed()
    with GitHTTP(env.root / "git-http", BOT, token) as git:
        git.publish(env.library_repo, "official-images")
        url = git.url("official-images")
        assert _sync(env, url).returncode == 0
        # What hubmirror wrote before this change: schema 5, the key with the token, updated run after run.
        db = sqlite3.connect(env.state_path, isolation_level=None)
        workers = ("work_runs", "work_units", "work_workers", "pull_quota", "work_blobs")  # the workers blocks
        for undo in (
            "DROP TABLE tag_owners",
            "DROP TABLE deletions",
            "ALTER TABLE runs DROP COLUMN job",
            "DROP TABLE tag_intents",
            *(f"DROP TABLE {t}" for t in workers),
            "DROP TABLE serve_triggers",  # the serve replicas block
            "DROP TABLE serve_deliveries",
            "DROP TABLE pull_quota_workers",  # the pulls out, per worker (version 12)
        ):
            db.execute(undo)  # back to what schema 5 had
        db.execute("UPDATE schema_version SET version = 5")
        db.execute("DELETE FROM meta")
        for commit in ["0" * 40, "1" * 40, env.commits[-1]]:
            db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (f"library_commit:{url}", commit),
            )
        db.close()
        assert _files_with(env.state_path.parent, token.encode()), "the old state should hold the token"

        p = _sync(env, url, "--dry-run")
        assert p.returncode == 0, p.stderr
        assert "full reconciliation" not in p.stderr
        p = _sync(env, url)
        assert p.returncode == 0, p.stderr
        with State.open(env.state_path) as state:
            assert state.schema_version >= 6
            assert state.library_commits() == {redact_url(url): env.commits[-1]}
    assert not _files_with(env.state_path.parent, token.encode())


def test_the_status_page_names_the_registry_that_rejected_a_credential_but_not_whose(env: Env) -> None:
    """The destination refuses the configured user: the unauthenticated pages say that a credential was
    rejected by that registry, never the user name or the variable it came from (the log may)."""
    env.seed()
    user = f"hubuser{uuid.uuid4().hex[:6]}"
    dest = env.make_registry(username=user, password="the-right-one")
    prefix = "HUBMIRROR_" + "".join(c if c.isalnum() else "_" for c in dest.host.upper()) + "_"
    creds = {prefix + "USERNAME": user, prefix + "PASSWORD": "a-wrong-one"}
    with serving(env, dest=f"{dest.host}/mirror", extra_env=creds) as srv:
        st = srv.idle(1)
        pages = {path: srv.request("GET", path)[1].decode() for path in ("/", "/api/status")}
    failed = [f["reason"] for r in st["repositories"] for f in r["failed"]] + [
        r["error"] for r in st["runs"] if r["error"]
    ]
    assert failed and all(f"credentials for {dest.host} were rejected" in f for f in failed), failed
    for path, text in pages.items():
        assert f"credentials for {dest.host} were rejected" in text, path
        assert user not in text and prefix + "USERNAME" not in text, (path, text[:3000])


# -- the pieces ---------------------------------------------------------------------------------------


def test_redact_url_and_text() -> None:
    cases = {
        "http://user:TOKEN@host/repo.git": "http://***@host/repo.git",
        "https://TOKEN@github.com/o/r.git": "https://***@github.com/o/r.git",
        "https://x-access-token:TOKEN@github.com:443/o/r": "https://***@github.com:443/o/r",
        "ssh://git:TOKEN@host/r.git": "ssh://git:***@host/r.git",
        "ssh://git@host/r.git": "ssh://git@host/r.git",
        "git@github.com:docker-library/official-images.git": "git@github.com:docker-library/official-images.git",
        "/srv/official-images": "/srv/official-images",
        "https://h/r.git?token=TOKEN&ref=main": "https://h/r.git?token=***&ref=main",
        "https://h/b?X-Amz-Credential=TOKEN&X-Amz-Signature=TOKEN&x=1": "https://h/b?X-Amz-Credential=***&X-Amz-Signature=***&x=1",
        "https://h/b?sv=2020&sig=TOKEN": "https://h/b?sv=2020&sig=***",
        "https://h/cb#access_token=TOKEN&state=1": "https://h/cb#access_token=***&state=1",
        "https://github.com/docker-library/official-images.git": "https://github.com/docker-library/official-images.git",
    }
    for url, want in cases.items():
        assert redact_url(url) == want, url
        assert "TOKEN" not in redact_url(url)
    text = "fatal: unable to access 'http://u:TOKEN@127.0.0.1:9/x.git/': 404; see https://h/?access_token=TOKEN."
    assert (
        redact_text(text)
        == "fatal: unable to access 'http://***@127.0.0.1:9/x.git/': 404; see https://h/?access_token=***"
    )


def test_the_log_filter_redacts_messages_arguments_and_tracebacks(caplog: object) -> None:
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "cloning %s failed", ("http://u:TOKEN@h/r",), None)
    try:
        raise RuntimeError("git said 'http://u:TOKEN@h/r' is gone")
    except RuntimeError:
        import sys

        record.exc_info = sys.exc_info()
    assert RedactingFilter().filter(record)
    text = logging.Formatter().format(record)
    assert "TOKEN" not in text and "http://***@h/r" in text and "RuntimeError" in text


def test_hide_credential_owners_covers_every_wording_of_a_rejected_credential() -> None:
    """Built with the real `Authenticator.rejected`, for every kind of credential source and status."""
    sources = [
        "environment HUBMIRROR_REG_5000_USERNAME",
        "environment HUBMIRROR_USERNAME",
        "auth file /etc/hub (old)/auth.json",
        "credential helper pass",
        "config credentials for reg:5000 (environment HUB_PW)",
    ]
    for source in sources:
        auth = Authenticator("reg:5000", Credentials("o'hub\"user", "pw", source))
        for status in (401, 403):
            for by in ("", "(token server https://reg:5000/token?service=x)"):
                message = str(auth.rejected(status, "push of mirror/x:1", by=by))
                public = hide_credential_owners(f"copy failed: {message}; retried")
                assert "credentials for reg:5000 were rejected" in public
                assert f"HTTP {status}" in public and public.endswith("; retried")
                assert "user" not in public and source not in public, public
