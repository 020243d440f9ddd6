"""Credentials from docker config.json (auths, credsStore, credHelpers), the environment, and store_login."""

from __future__ import annotations

import base64
import json
import os
import stat
import sys
from pathlib import Path

import pytest

from hubmirror import CredentialsError
from hubmirror.registry.credentials import (
    Credentials,
    auth_key,
    authfile_path,
    from_authfile,
    from_env,
    resolve,
    store_login,
)


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def test_auths_base64_and_plain_fields(tmp_path: Path) -> None:
    cfg = tmp_path / "config.json"
    cfg.write_text(
        json.dumps(
            {
                "auths": {
                    "https://index.docker.io/v1/": {"auth": _b64("hubuser:hub:pass")},
                    "http://reg.example:5000": {"username": "u2", "password": "p2"},
                }
            }
        )
    )
    hub = from_authfile("docker.io", cfg)
    assert hub is not None and (hub.username, hub.password) == ("hubuser", "hub:pass")
    assert from_authfile("index.docker.io", cfg) == hub
    reg = from_authfile("reg.example:5000", cfg)
    assert reg is not None and (reg.username, reg.password) == ("u2", "p2")
    assert from_authfile("other.example", cfg) is None
    assert from_authfile("docker.io", tmp_path / "missing.json") is None


def test_broken_auth_file_names_the_file(tmp_path: Path) -> None:
    cfg = tmp_path / "config.json"
    cfg.write_text('{"auths": {"x": ')
    with pytest.raises(CredentialsError, match=str(cfg)):
        from_authfile("x", cfg)
    cfg.write_text(json.dumps({"auths": {"x": {"auth": _b64("no-colon-secretvalue")}}}))
    with pytest.raises(CredentialsError, match="'x'") as exc:
        from_authfile("x", cfg)
    assert "secretvalue" not in str(exc.value)


def _helper(tmp_path: Path, name: str, store: dict[str, list[str]]) -> None:
    """Install a real ``docker-credential-<name>`` program backed by a JSON file."""
    db = tmp_path / f"{name}.db.json"
    db.write_text(json.dumps(store))
    prog = tmp_path / "bin" / f"docker-credential-{name}"
    prog.parent.mkdir(exist_ok=True)
    prog.write_text(
        f"""#!{sys.executable}
import json, sys
db = {str(db)!r}
data = json.load(open(db))
if sys.argv[1] == "get":
    key = sys.stdin.read().strip()
    if key not in data:
        print("credentials not found in native keychain"); sys.exit(1)
    print(json.dumps({{"ServerURL": key, "Username": data[key][0], "Secret": data[key][1]}}))
elif sys.argv[1] == "store":
    obj = json.load(sys.stdin)
    data[obj["ServerURL"]] = [obj["Username"], obj["Secret"]]
    json.dump(data, open(db, "w"))
"""
    )
    prog.chmod(0o755)


def test_creds_store_and_cred_helpers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _helper(tmp_path, "desk", {"https://index.docker.io/v1/": ["hubber", "tok-1"]})
    _helper(tmp_path, "ecr", {"123.dkr.example": ["AWS", "tok-2"]})
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    cfg = tmp_path / "config.json"
    cfg.write_text(
        json.dumps(
            {
                "credsStore": "desk",
                "credHelpers": {"123.dkr.example": "ecr"},
                "auths": {"https://index.docker.io/v1/": {"auth": _b64("ignored:ignored")}},
            }
        )
    )
    hub = from_authfile("docker.io", cfg)
    assert hub is not None and (hub.username, hub.password) == ("hubber", "tok-1")
    ecr = from_authfile("123.dkr.example", cfg)
    assert ecr is not None and (ecr.username, ecr.password) == ("AWS", "tok-2")
    assert from_authfile("nothing.example", cfg) is None  # helper says "not found"
    # store_login goes to the configured helper, not into the file
    store_login("docker.io", "new", "tok-3", cfg)
    again = from_authfile("docker.io", cfg)
    assert again is not None and (again.username, again.password) == ("new", "tok-3")
    assert "tok-3" not in cfg.read_text()


def test_missing_helper_is_a_clear_error(tmp_path: Path) -> None:
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"credsStore": "nonexistent-xyz"}))
    with pytest.raises(CredentialsError, match="docker-credential-nonexistent-xyz is not installed"):
        from_authfile("docker.io", cfg)


def test_environment_scoped_per_registry() -> None:
    env = {
        "HUBMIRROR_127_0_0_1_5000_USERNAME": "local",
        "HUBMIRROR_127_0_0_1_5000_PASSWORD": "pw1",
        "HUBMIRROR_USERNAME": "hubby",
        "HUBMIRROR_PASSWORD": "pw2",
    }
    local = from_env("127.0.0.1:5000", env)
    assert local is not None and (local.username, local.password) == ("local", "pw1")
    hub = from_env("index.docker.io", env)
    assert hub is not None and hub.username == "hubby"
    assert from_env("other.example", env) is None  # unscoped variables are for Docker Hub only
    scoped = from_env("docker.io", {**env, "HUBMIRROR_DOCKER_IO_USERNAME": "s", "HUBMIRROR_DOCKER_IO_PASSWORD": "p"})
    assert scoped is not None and scoped.username == "s"


def test_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit_file = tmp_path / "explicit.json"
    env_file = tmp_path / "env.json"
    for f, user in ((explicit_file, "from-explicit"), (env_file, "from-env-file")):
        f.write_text(json.dumps({"auths": {"r.example": {"auth": _b64(f"{user}:x")}}}))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(env_file))
    monkeypatch.delenv("HUBMIRROR_R_EXAMPLE_USERNAME", raising=False)
    assert authfile_path(explicit_file) == explicit_file
    assert authfile_path() == env_file
    found = resolve("r.example", authfile=explicit_file)
    assert found is not None and found.username == "from-explicit"
    found = resolve("r.example")
    assert found is not None and found.username == "from-env-file"
    monkeypatch.setenv("HUBMIRROR_R_EXAMPLE_USERNAME", "from-env")
    monkeypatch.setenv("HUBMIRROR_R_EXAMPLE_PASSWORD", "y")
    found = resolve("r.example", authfile=explicit_file)
    assert found is not None and found.username == "from-env"
    given = Credentials("given", "z")
    assert resolve("r.example", credentials=given) is given
    monkeypatch.delenv("REGISTRY_AUTH_FILE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    assert authfile_path() == tmp_path / "home" / ".docker" / "config.json"


def test_store_login_writes_like_docker(tmp_path: Path) -> None:
    cfg = tmp_path / "sub" / "config.json"
    cfg.parent.mkdir()
    cfg.write_text(
        json.dumps(
            {
                "auths": {"other.example": {"auth": _b64("o:p")}, "index.docker.io": {"auth": _b64("old:x")}},
                "psFormat": "t",
            }
        )
    )
    path = store_login("docker.io", "me", "secret-pw", cfg)
    assert path == cfg
    obj = json.loads(cfg.read_text())
    assert obj["psFormat"] == "t"  # other keys kept
    assert obj["auths"]["other.example"] == {"auth": _b64("o:p")}
    assert obj["auths"][auth_key("docker.io")] == {"auth": _b64("me:secret-pw")}
    assert "index.docker.io" not in obj["auths"]  # the older spelling of the same registry is replaced
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o600
    fresh = tmp_path / "new" / "dir" / "config.json"
    store_login("127.0.0.1:5000", "u", "p", fresh)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600
    creds = from_authfile("127.0.0.1:5000", fresh)
    assert creds is not None and (creds.username, creds.password) == ("u", "p")


def test_credentials_repr_hides_secret() -> None:
    c = Credentials("user", "hunter2-secret")
    assert "hunter2-secret" not in repr(c) and "hunter2-secret" not in str(c)
    assert "user" in repr(c)
