"""Registry credentials: explicit, from the environment, or from a docker ``config.json``.

Lookup order for a registry (first hit wins):

1. explicit `Credentials` passed by the caller;
2. environment: ``HUBMIRROR_<HOST>_USERNAME`` / ``HUBMIRROR_<HOST>_PASSWORD`` where ``<HOST>`` is the
   registry name upper-cased with every non-alphanumeric character replaced by ``_``
   (``docker.io`` → ``HUBMIRROR_DOCKER_IO_USERNAME``, ``127.0.0.1:5000`` →
   ``HUBMIRROR_127_0_0_1_5000_USERNAME``); the unscoped ``HUBMIRROR_USERNAME`` /
   ``HUBMIRROR_PASSWORD`` apply to Docker Hub only;
3. the auth file: ``credHelpers[host]``, else ``credsStore``, else ``auths`` (``auth`` base64 or
   ``username``/``password``). Docker Hub is stored under ``https://index.docker.io/v1/``.

The auth file is the explicit path, else ``$REGISTRY_AUTH_FILE``, else ``$DOCKER_CONFIG/config.json``,
else ``~/.docker/config.json``. Secrets never appear in a repr or an error message.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._errors import CredentialsError
from ..reference import DOCKER_HUB, DOCKER_HUB_AUTH_KEY, normalize_registry

_HELPER_TIMEOUT = 30.0


@dataclass(frozen=True)
class Credentials:
    """A username and password (or access token). The secret is left out of repr."""

    username: str
    password: str = field(repr=False)
    source: str = "explicit"

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, source={self.source!r})"


def auth_key(registry: str) -> str:
    """The config.json / credential-store key for *registry* (Docker Hub: ``https://index.docker.io/v1/``)."""
    reg = normalize_registry(registry)
    return DOCKER_HUB_AUTH_KEY if reg == DOCKER_HUB else reg


def authfile_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The auth file: *explicit*, ``$REGISTRY_AUTH_FILE``, ``$DOCKER_CONFIG/config.json``, ``~/.docker/config.json``."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get("REGISTRY_AUTH_FILE")
    if env:
        return Path(env).expanduser()
    docker_config = os.environ.get("DOCKER_CONFIG")
    if docker_config:
        return Path(docker_config).expanduser() / "config.json"
    return Path.home() / ".docker" / "config.json"


def env_prefix(registry: str) -> str:
    """``HUBMIRROR_<HOST>_`` for *registry*, e.g. ``HUBMIRROR_DOCKER_IO_``."""
    return "HUBMIRROR_" + re.sub(r"[^A-Z0-9]", "_", normalize_registry(registry).upper()) + "_"


def from_env(registry: str, environ: Mapping[str, str] | None = None) -> Credentials | None:
    """Credentials from the environment (see the module docstring), or None."""
    env = os.environ if environ is None else environ
    prefix = env_prefix(registry)
    user, password = env.get(prefix + "USERNAME"), env.get(prefix + "PASSWORD")
    if user and password is not None:
        return Credentials(user, password, f"environment {prefix}USERNAME")
    if normalize_registry(registry) == DOCKER_HUB:
        user, password = env.get("HUBMIRROR_USERNAME"), env.get("HUBMIRROR_PASSWORD")
        if user and password is not None:
            return Credentials(user, password, "environment HUBMIRROR_USERNAME")
    return None


def _host_of_key(key: str) -> str:
    """``https://index.docker.io/v1/`` → ``docker.io``; ``http://host:5000`` → ``host:5000``."""
    k = key.strip()
    if "://" in k:
        k = k.split("://", 1)[1]
    k = k.split("/", 1)[0]
    return normalize_registry(k)


def _read_config(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise CredentialsError(f"cannot read auth file {path}: {e.strerror}") from None
    if not text.strip():
        return {}
    try:
        obj = json.loads(text)
    except ValueError as e:
        raise CredentialsError(f"auth file {path} is not valid JSON (line {getattr(e, 'lineno', '?')})") from None
    if not isinstance(obj, dict):
        raise CredentialsError(f"auth file {path} is not a JSON object")
    return obj


def _helper_for(config: Mapping[str, Any], registry: str) -> str | None:
    host = normalize_registry(registry)
    helpers = config.get("credHelpers") or {}
    if isinstance(helpers, dict):
        for key, name in helpers.items():
            if _host_of_key(key) == host and isinstance(name, str) and name:
                return name
    store = config.get("credsStore")
    return store if isinstance(store, str) and store else None


def _run_helper(name: str, action: str, payload: str) -> subprocess.CompletedProcess[str]:
    program = f"docker-credential-{name}"
    try:
        return subprocess.run(
            [program, action], input=payload, capture_output=True, text=True, timeout=_HELPER_TIMEOUT, check=False
        )
    except FileNotFoundError:
        raise CredentialsError(f"credential helper {program} is not installed (named in the auth file)") from None
    except subprocess.TimeoutExpired:
        raise CredentialsError(f"credential helper {program} did not answer within {_HELPER_TIMEOUT:.0f} s") from None


def from_helper(name: str, registry: str) -> Credentials | None:
    """Ask ``docker-credential-<name> get`` for *registry*; None if it has nothing stored."""
    key = auth_key(registry)
    proc = _run_helper(name, "get", key)
    if proc.returncode != 0:
        if "not found" in (proc.stdout + proc.stderr).lower():
            return None
        raise CredentialsError(f"credential helper docker-credential-{name} failed for {key} (exit {proc.returncode})")
    try:
        obj = json.loads(proc.stdout)
        user, secret = str(obj["Username"]), str(obj["Secret"])
    except (ValueError, KeyError, TypeError):
        raise CredentialsError(f"credential helper docker-credential-{name} gave unreadable output for {key}") from None
    return Credentials(user, secret, f"credential helper {name}") if secret else None


def from_authfile(registry: str, path: Path) -> Credentials | None:
    """Credentials for *registry* from the docker config.json at *path*, or None."""
    config = _read_config(path)
    helper = _helper_for(config, registry)
    if helper:
        return from_helper(helper, registry)
    auths = config.get("auths") or {}
    if not isinstance(auths, dict):
        return None
    host = normalize_registry(registry)
    for key, entry in auths.items():
        if _host_of_key(key) != host or not isinstance(entry, dict):
            continue
        if entry.get("username") and entry.get("password") is not None:
            return Credentials(str(entry["username"]), str(entry["password"]), f"auth file {path}")
        encoded = entry.get("auth")
        if isinstance(encoded, str) and encoded:
            try:
                user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                raise CredentialsError(f"auth file {path}: entry {key!r} has an invalid 'auth' value") from None
            if not sep or not user:
                raise CredentialsError(f"auth file {path}: entry {key!r} 'auth' is not base64 of user:password")
            return Credentials(user, password, f"auth file {path}")
    return None


def resolve(
    registry: str,
    *,
    credentials: Credentials | None = None,
    authfile: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Credentials | None:
    """Credentials for *registry* in the documented order, or None for anonymous access."""
    if credentials is not None:
        return credentials
    found = from_env(registry, environ)
    if found is not None:
        return found
    return from_authfile(registry, authfile_path(authfile))


def store_login(registry: str, username: str, password: str, path: str | os.PathLike[str] | None = None) -> Path:
    """Save credentials like ``docker login``: into the configured helper, else ``auths`` (file mode 0600).

    Other keys of the file are kept. Returns the auth file's path.
    """
    file = authfile_path(path)
    config = _read_config(file)
    key = auth_key(registry)
    helper = _helper_for(config, registry)
    if helper:
        payload = json.dumps({"ServerURL": key, "Username": username, "Secret": password})
        proc = _run_helper(helper, "store", payload)
        if proc.returncode != 0:
            raise CredentialsError(f"credential helper docker-credential-{helper} could not store {key}")
        return file
    auths = config.get("auths")
    if not isinstance(auths, dict):
        auths = {}
    # Drop other spellings of the same registry so the new entry is the one found.
    for other in [k for k in auths if k != key and _host_of_key(k) == _host_of_key(key)]:
        del auths[other]
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    entry = auths.get(key) if isinstance(auths.get(key), dict) else {}
    assert isinstance(entry, dict)
    entry = {k: v for k, v in entry.items() if k not in ("username", "password", "identitytoken")}
    entry["auth"] = token
    auths[key] = entry
    config["auths"] = auths
    _write_private(file, json.dumps(config, indent="\t") + "\n")
    return file


def _write_private(path: Path, text: str) -> None:
    """Write *text* to *path* atomically with mode 0600 (directory created 0700)."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".config.json.", dir=path.parent)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    except OSError as e:
        raise CredentialsError(f"cannot write auth file {path}: {e.strerror}") from None
