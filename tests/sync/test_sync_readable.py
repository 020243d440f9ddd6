"""Readable failures and small truths of ``hubmirror sync`` (issue 16, items 8 and 9): failures grouped by
cause, references never cut off a terminal, a wrong destination in one line before any work, no rows for
sources that did nothing, "did you mean" for config keys, and a hint to ``--library`` when it cannot be read."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

from test_sync_support import HUBMIRROR, NAMESPACE, Env, blob_files

from _auth import PASSWORD, USER
from hubmirror._units import size_text
from hubmirror.report import Outcome, ReportItem, failure_cause
from hubmirror.server.app import _size as page_size
from hubmirror.testing import images as img


def error_lines(p: subprocess.CompletedProcess[str]) -> list[str]:
    assert "Traceback" not in p.stderr, p.stderr
    return [line for line in p.stderr.splitlines() if line.strip()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_destination_is_one_line_before_any_work(env: Env) -> None:
    env.seed()
    dest = f"127.0.0.1:{free_port()}/{NAMESPACE}"

    p = env.cli("--images", "tiny,pyish", dest=dest)

    assert p.returncode == 1, p.stderr
    [line] = error_lines(p)
    assert line.startswith(f"error: destination {dest}: ") and "unreachable" in line, line
    assert env.hub.manifest_gets() == 0


def test_destination_refusing_the_credentials_is_one_line_before_any_work(env: Env) -> None:
    env.seed()
    dest = env.make_registry(username=USER, password=PASSWORD)
    config = env.root / "hubmirror.yaml"
    config.write_text(f"credentials:\n  {dest.host}:\n    username_env: DEST_USER\n    password_env: DEST_PASSWORD\n")

    p = subprocess.run(
        env.cli_args("--config", str(config), "--images", "tiny,pyish", dest=f"{dest.host}/{NAMESPACE}"),
        capture_output=True,
        text=True,
        env=env.cli_env({"DEST_USER": USER, "DEST_PASSWORD": "Wr0ng-dest-pa55word"}),
        timeout=120,
        check=False,
    )

    assert p.returncode == 1, p.stderr
    [line] = error_lines(p)
    assert line.startswith(f"error: destination {dest.host}/{NAMESPACE}: "), line
    assert f"credentials for {dest.host} were rejected" in line
    assert env.hub.manifest_gets() == 0 and env.hub.manifest_heads() == 0
    assert blob_files(dest) == 0


def test_many_not_found_tags_are_grouped_by_cause_with_counts_and_examples(env: Env) -> None:
    env.seed()
    listing = env.root / "images.txt"
    listing.write_text("docker.io/library/tiny:1.0\n" + "".join(f"docker.io/library/tiny:9.{i}\n" for i in range(60)))
    cause = f"60 × not found on {env.hub.host} — tiny:9.0, tiny:9.1, tiny:9.2 (+57 more)"

    dry = env.cli("--list", str(listing), "--dry-run")

    assert dry.returncode == 1, dry.stderr
    assert "61 failed" not in dry.stderr and "60 failed, by cause:" in dry.stderr, dry.stderr
    assert cause in [line.strip() for line in dry.stderr.splitlines()], dry.stderr
    assert "tiny:1.0" in dry.stderr  # the one copy is still in the table

    run = env.cli("--list", str(listing))

    assert run.returncode == 1, run.stderr
    # one row of the table, with examples, not 50 rows and "10 more"
    assert "60 image/tag groups, e.g. tiny:9.0, tiny:9.1, tiny:9.2" in run.stderr, run.stderr
    assert f"not found on {env.hub.host}" in run.stderr
    assert "more image/tag groups" not in run.stderr
    # "checking 61 tags (manifest HEADs, free)" is followed by a summary that counts them (not "0 HEADs")
    assert "checking 61 tags" in run.stderr
    heads = int(run.stderr.rsplit(" HEADs", 1)[0].rsplit("· ", 1)[1])
    assert heads >= 61, run.stderr
    assert env.dest_tags("tiny") == ["1.0"]


def test_a_reference_longer_than_80_columns_is_printed_whole_off_a_terminal(env: Env) -> None:
    repo = "teamwithalongname/an-image-whose-repository-name-alone-is-longer-than-eighty-columns-of-a-terminal"
    assert len(repo) > 80
    img.push_sync(env.hub.upstream, repo, img.image(repo, layers=(128,)), ["1.0"])
    listing = env.root / "images.txt"
    listing.write_text(f"docker.io/{repo}:1.0\n")
    environ = {k: v for k, v in env.cli_env().items() if k not in ("COLUMNS", "LINES")}

    for dry in (("--dry-run",), ()):
        p = subprocess.run(
            env.cli_args("--list", str(listing), *dry), capture_output=True, text=True, env=environ, timeout=120
        )

        assert p.returncode == 0, p.stderr
        assert any(repo in line for line in p.stderr.splitlines()), p.stderr
    assert env.dest_tags(repo) == ["1.0"]


def test_local_only_run_shows_no_rows_for_docker_hub_or_mirrors_and_one_byte_unit(env: Env) -> None:
    local = env.make_registry()
    img.push_sync(local, "team/app", img.index("app", ("linux/amd64", "linux/arm64"), layers=(3000,)), ["1.0"])
    listing = env.root / "images.txt"
    listing.write_text(f"{local.host}/team/app:1.0\n")
    args = [a for a in env.cli_args("--list", str(listing), "--json") if a not in ("--source", env.hub.host)]

    p = subprocess.run(args, capture_output=True, text=True, env=env.cli_env(), timeout=120, check=False)

    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    assert [s["name"] for s in report["content_sources"]] == [local.host]
    for absent in ("registry-1.docker.io", "docker.io", "mirror.gcr.io", "public.ecr.aws", "content sources"):
        assert absent not in p.stderr, (absent, p.stderr)
    assert "manifests from mirrors" not in p.stderr
    # Bytes in one unit everywhere: the sync's summary, `hubmirror status` and the status page.
    written = size_text(report["totals"]["bytes"])
    assert written.endswith(" kB") and f"· {written} ·" in p.stderr
    status = subprocess.run(
        [args[0], "status", "--state", str(env.state_path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert status.returncode == 0 and written in status.stderr, status.stderr
    assert page_size(report["totals"]["bytes"]) == written


def test_unknown_config_key_gets_did_you_mean(tmp_path: Path) -> None:
    config = tmp_path / "hubmirror.yaml"
    config.write_text("dest: 127.0.0.1:5000/mirror\nmax_pull: 3\n")

    p = subprocess.run(
        [HUBMIRROR, "sync", "--config", str(config), "--dry-run"], capture_output=True, text=True, timeout=60
    )

    assert p.returncode == 1, p.stderr
    [line] = error_lines(p)
    assert line.startswith(f"error: {config}:2: max_pull: unknown key, did you mean max_pulls? (allowed: "), line


def test_library_clone_without_network_suggests_a_local_clone_or_bundle(env: Env) -> None:
    # No network: git reaches github.com through a proxy that refuses every connection.
    proxy = f"http://127.0.0.1:{free_port()}"
    args = [HUBMIRROR, "sync", "--images", "python", "--dest", env.dest_prefix, "--state", str(env.state_path)]
    args += ["--cache-dir", str(env.cache), "--dry-run"]
    environ = env.cli_env({"https_proxy": proxy, "HTTPS_PROXY": proxy, "http_proxy": proxy, "HTTP_PROXY": proxy})
    environ["NO_PROXY"] = environ["no_proxy"] = "127.0.0.1,localhost"

    p = subprocess.run(args, capture_output=True, text=True, env=environ, timeout=120, check=False)

    assert p.returncode == 1, p.stderr
    [line] = [ln for ln in error_lines(p) if ln.startswith("error:")]
    assert "cloning https://github.com/docker-library/official-images" in line, line
    assert "give --library a local clone or a git bundle" in line, line


def test_failure_causes_leave_out_the_items_own_names() -> None:
    def cause(source: str, tags: list[str], reason: str, digest: str | None = None) -> str:
        return failure_cause(ReportItem(Outcome.FAILED, source, "dest/x", tags, digest, None, reason))

    assert cause("docker.io/library/python:3.1", ["3.1"], "docker.io/library/python:3.1 not found on hub") == (
        "not found on hub"
    )
    assert cause("docker.io/library/node:20", ["20"], "hub: HEAD manifest library/node:20: HTTP 500 (UNKNOWN)") == (
        "hub: HEAD manifest …: HTTP 500 (UNKNOWN)"
    )
    digest = "sha256:" + "ab" * 32
    conflict = f"conflict: the destination tag holds {digest[:19]}…, which hubmirror did not write"
    assert cause("ghcr.io/a/b:1", ["1"], conflict, digest) == (
        "conflict: the destination tag holds sha256:…, which hubmirror did not write"
    )
    assert cause("--images alpah", [], "matches no repository (did you mean alpha?)") == (
        "matches no repository (did you mean alpha?)"
    )
