"""`hubmirror login`: verify against the registry, then store credentials like `docker login`."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

from typer.testing import CliRunner

from _auth import PASSWORD, USER
from hubmirror.cli import app
from hubmirror.registry.credentials import from_authfile
from hubmirror.testing.hub import HubEmulator
from hubmirror.testing.registry import Registry

runner = CliRunner()


def test_login_basic_registry_stores_credentials(auth_registry: Registry, tmp_path: Path) -> None:
    cfg = tmp_path / "auth.json"
    cfg.write_text(json.dumps({"auths": {"other.example": {"auth": "b3RoZXI6eA=="}}, "detachKeys": "ctrl-q"}))
    result = runner.invoke(
        app,
        ["login", auth_registry.host, "--username", USER, "--password-stdin", "--authfile", str(cfg), "--json"],
        input=PASSWORD + "\n",
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "registry": auth_registry.host,
        "host": auth_registry.host,
        "username": USER,
        "authfile": str(cfg),
    }
    obj = json.loads(cfg.read_text())
    assert obj["detachKeys"] == "ctrl-q" and "other.example" in obj["auths"]
    assert base64.b64decode(obj["auths"][auth_registry.host]["auth"]).decode() == f"{USER}:{PASSWORD}"
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o600
    assert PASSWORD not in result.output


def test_login_wrong_password_fails_and_stores_nothing(auth_registry: Registry, tmp_path: Path) -> None:
    cfg = tmp_path / "auth.json"
    result = runner.invoke(
        app,
        ["login", auth_registry.host, "-u", USER, "--password-stdin", "--authfile", str(cfg)],
        input="Wrong-Pa55-zz\n",
    )
    assert result.exit_code == 1
    assert "failed" in result.output and auth_registry.host in result.output
    assert "Wrong-Pa55-zz" not in result.output
    assert not cfg.exists()


def test_login_to_token_registry(hub: HubEmulator, tmp_path: Path) -> None:
    cfg = tmp_path / "config.json"
    result = runner.invoke(
        app, ["login", hub.host, "-u", USER, "--password-stdin", "--authfile", str(cfg)], input=PASSWORD
    )
    assert result.exit_code == 0, result.output
    assert "Login Succeeded" in result.output
    assert hub.token_requests() == 1
    creds = from_authfile(hub.host, cfg)
    assert creds is not None and (creds.username, creds.password) == (USER, PASSWORD)
    bad = runner.invoke(
        app, ["login", hub.host, "-u", USER, "--password-stdin", "--authfile", str(cfg)], input="nope-nope"
    )
    assert bad.exit_code == 1 and f"credentials for {hub.host} were rejected" in " ".join(bad.output.split())


def test_login_needs_username_with_password_stdin(tmp_path: Path) -> None:
    result = runner.invoke(app, ["login", "127.0.0.1:1", "--password-stdin"], input="x")
    assert result.exit_code == 2
    assert "--username" in result.output
    flag = runner.invoke(app, ["login", "127.0.0.1:1", "-u", "x", "--password", "secret"])
    assert flag.exit_code == 2 and "No such option" in flag.output  # a password is never a flag
