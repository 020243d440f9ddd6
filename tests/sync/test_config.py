"""The sync config file: the example loads, errors name key and line, secrets are refused, CLI overrides."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from hubmirror import ConfigError, CredentialsError
from hubmirror.config import (
    DEFAULT_LIBRARY,
    SyncConfig,
    load_config,
    parse_config,
    parse_duration,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hubmirror.yaml"


def write(tmp_path: Path, text: str, name: str = "hubmirror.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_example_file_loads_and_documents_every_key() -> None:
    cfg = load_config(EXAMPLE)
    assert cfg.dest == "registry.example.com:5000/mirror"
    assert cfg.images == ["python", "node", "golang", "*-alpine*"]
    assert cfg.platforms == ["linux/amd64", "linux/arm64/v8"]
    assert cfg.max_pulls == 150
    assert cfg.ratelimit.reserve == 5 and cfg.ratelimit.max_wait == 6 * 3600
    assert cfg.schedule == "17 */6 * * *"
    assert cfg.credentials["docker.io"].password_env == "HUB_TOKEN"
    # Relative paths are anchored at the config file's directory, not the current directory.
    assert cfg.state == EXAMPLE.parent / "state" / "hubmirror.db"
    assert cfg.list_file == EXAMPLE.parent / "extra-images.txt"
    text = EXAMPLE.read_text()
    for name, field in SyncConfig.model_fields.items():
        key = field.alias or name
        assert re.search(rf"^{key}:", text, re.M), f"examples/hubmirror.yaml does not document {key}"
    for key in ("reserve", "min_remaining", "wait", "max_wait", "username_env", "password_env", "authfile", "helper"):
        assert re.search(rf"^\s+{key}:", text, re.M), f"examples/hubmirror.yaml does not document {key}"


def test_empty_file_gives_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    cfg = load_config(write(tmp_path, "# nothing yet\n"))
    assert cfg.library == DEFAULT_LIBRARY and cfg.source == "docker.io" and cfg.dest is None
    assert cfg.state == tmp_path / "xdg" / "hubmirror" / "state.db"
    assert (cfg.windows, cfg.prune, cfg.dry_run, cfg.wait_for_quota) == (False, False, False, False)
    assert cfg.ratelimit.reserve == 5


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "dest: r:5000/m\nratelimit:\n  wait: true\n  reserve: -1\n",
            "hubmirror.yaml:4: ratelimit.reserve: must be ≥ 0",
        ),
        (
            "dest: r:5000/m\nmax_pull: 3\n",
            "hubmirror.yaml:2: max_pull: unknown key, did you mean max_pulls? (allowed: ",
        ),
        (
            "ratelimit:\n  reserve: 1\n  resrve: 2\n",
            "hubmirror.yaml:3: ratelimit.resrve: unknown key, did you mean reserve? (allowed: max_wait,",
        ),
        (
            "include_tags:\n  - ok\n  - '3.(12'\n",
            "hubmirror.yaml:3: include_tags[1]: invalid regular expression '3.(12'",
        ),
        ("schedule: every tuesday\n", "hubmirror.yaml:1: schedule: 'every tuesday' is not a valid cron expression"),
        ("\n\nconcurrency: lots\n", "hubmirror.yaml:3: concurrency: expected a whole number, got text 'lots'"),
        # issue 8, finding 10: loose types were accepted (2.0 → 2, 'yes' → True, 5 → ['5'], 'x' → ['x'])
        (
            "dest: r:5000/m\nconcurrency: 2.0\n",
            "hubmirror.yaml:2: concurrency: expected a whole number, got a number 2.0",
        ),
        ("prune: 'yes'\n", "hubmirror.yaml:1: prune: expected true or false, got text 'yes'"),
        ("images: 5\n", "hubmirror.yaml:1: images: expected a list, e.g. [5] (got 5)"),
        ("exclude_tags: .*-rc\n", "hubmirror.yaml:1: exclude_tags: expected a list, e.g. [.*-rc]"),
        ("max_pulls: '10'\n", "hubmirror.yaml:1: max_pulls: expected a whole number, got text '10'"),
        ("state: 5\n", "hubmirror.yaml:1: state: expected a path (text), got a number 5"),
        ("ratelimit:\n  reserve: 1.5\n", "hubmirror.yaml:2: ratelimit.reserve: expected a whole number, got a number"),
        ("concurrency: 0\n", "hubmirror.yaml:1: concurrency: must be ≥ 1"),
        ("platforms: [linux/amd64, linux]\n", "hubmirror.yaml:1: platforms[1]: invalid platform 'linux'"),
        ("dest: https://r.example.com/m\n", "hubmirror.yaml:1: dest: 'https://r.example.com/m': give the destination"),
        ("dest: r.example.com/Mirror\n", "hubmirror.yaml:1: dest: 'r.example.com/Mirror': 'Mirror' is not a valid"),
        ("ratelimit:\n  max_wait: soon\n", "hubmirror.yaml:2: ratelimit.max_wait: expected a duration like 90s"),
        (
            "credentials:\n  docker.io:\n    username_env: U\n",
            "hubmirror.yaml:2: credentials.docker.io: username_env and",
        ),
        (
            "credentials:\n  ghcr.io: {helper: pass, authfile: a.json}\n",
            "hubmirror.yaml:2: credentials.ghcr.io: give exactly",
        ),
        ("prune: true\nprune: false\n", "hubmirror.yaml:2: prune: duplicate key (first at line 1)"),
        ("images: [python\n", "hubmirror.yaml:2: invalid YAML"),
        ("- python\n- node\n", "hubmirror.yaml:1: the config must be a mapping of keys, not a list"),
        ("images: [Python]\n", "hubmirror.yaml:1: images[0]: 'Python' is not an image name or glob"),
    ],
    ids=lambda v: v[:28] if isinstance(v, str) else v,
)
def test_errors_name_file_line_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    message = str(exc.value)
    assert message.startswith(str(tmp_path / "hubmirror.yaml")), message
    assert expected in message.replace(str(tmp_path) + "/", ""), message


def test_all_errors_reported_in_file_order(tmp_path: Path) -> None:
    text = "max_pulls: -1\nwindows: perhaps\nratelimit:\n  reserve: -2\n"
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, text))
    lines = str(exc.value).splitlines()
    assert [re.sub(r"^.*hubmirror\.yaml:(\d+): ([\w.]+):.*$", r"\1 \2", line) for line in lines] == [
        "1 max_pulls",
        "2 windows",
        "4 ratelimit.reserve",
    ]


@pytest.mark.parametrize("key", ["password", "token", "auth"])
def test_inline_secrets_are_rejected_without_echoing_them(tmp_path: Path, key: str) -> None:
    secret = "hunter2-Sup3rSecret"
    text = f"dest: r:5000/m\ncredentials:\n  docker.io:\n    username_env: HUB_USER\n    {key}: {secret}\n"
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, text))
    message = str(exc.value)
    assert f"hubmirror.yaml:5: credentials.docker.io.{key}: inline secrets are not allowed" in message
    assert "password_env" in message  # tells the user what to do instead
    assert secret not in message
    assert secret not in repr(exc.value)


def test_yaml_scalars_kept_as_text_where_text_is_meant(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "commit: 0123456\ninclude_tags: [1.0, 2]\nplatforms: linux/amd64\n"))
    assert cfg.commit == "0123456"  # not octal 42798
    assert cfg.include_tags == ["1.0", "2"]
    assert cfg.platforms == ["linux/amd64"]  # documented: a single platform stands for a one-item list
    assert cfg.tag_selected("1.0") and cfg.tag_selected("1x0") and not cfg.tag_selected("1.0-rc")


def test_tag_selection_and_helpers() -> None:
    cfg = parse_config(
        "include_tags: ['3\\.1[23].*', latest]\nexclude_tags: ['.*-rc\\d*']\nwait: true\n"
        "source: registry-1.docker.io\ncredentials:\n  index.docker.io: {helper: pass}\n"
        "platforms: [linux/arm64]\n"
    )
    assert [t for t in ["latest", "3.12", "3.13-slim", "3.13-rc1", "3.11", "2"] if cfg.tag_selected(t)] == [
        "latest",
        "3.12",
        "3.13-slim",
    ]
    assert cfg.source == "docker.io"
    cred = cfg.credential_for("registry-1.docker.io")
    assert cred is not None and cred.helper == "pass"
    assert cfg.wait_for_quota is True
    assert [str(p) for p in cfg.platform_list()] == ["linux/arm64"]


def test_durations() -> None:
    assert parse_duration("90s") == 90
    assert parse_duration("15m") == 900
    assert parse_duration("1h30m") == 5400
    assert parse_duration("2d") == 172800
    assert parse_duration(42) == 42
    assert parse_duration(None) is None
    with pytest.raises(ValueError):
        parse_duration("soon")


def test_cli_overrides_file_and_none_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "etc").mkdir()
    cfg = load_config(write(tmp_path / "etc", EXAMPLE.read_text()))
    merged = cfg.merge(
        {
            "max_pulls": 10,
            "dest": None,  # flag not given: the file's value stays
            "images": [],  # repeatable flag given zero times: the file's list stays
            "platforms": ("linux/s390x",),
            "dry-run": True,
            "ratelimit.reserve": 0,
            "list": "cli-list.txt",
        }
    )
    assert merged.max_pulls == 10 and merged.dry_run is True
    assert merged.dest == cfg.dest == "registry.example.com:5000/mirror"
    assert merged.images == cfg.images
    assert merged.platforms == ["linux/s390x"]
    assert merged.ratelimit.reserve == 0 and merged.ratelimit.min_remaining == cfg.ratelimit.min_remaining
    assert merged.list_file == tmp_path / "cli-list.txt"  # CLI paths are relative to the current directory
    assert merged.state == tmp_path / "etc" / "state" / "hubmirror.db"  # file paths stay anchored at the file
    assert cfg.max_pulls == 150  # the original is unchanged


def test_cli_errors_name_the_flag_and_file_errors_keep_their_line(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "dest: r:5000/m\nconcurrency: 2\n"))
    with pytest.raises(ConfigError, match=r"^option --max-pulls: must be ≥ 0$"):
        cfg.merge({"max_pulls": -3})
    with pytest.raises(ConfigError, match=r"^option --include-tags \(value 2\): invalid regular expression '\('"):
        cfg.merge({"include_tags": ["ok", "("]})
    with pytest.raises(ConfigError, match=r"^option ratelimit\.reserve: must be ≥ 0$"):
        cfg.merge({"ratelimit.reserve": -1})
    with pytest.raises(ConfigError, match=r"^option --bogus: unknown key"):
        cfg.merge({"bogus": 1})
    assert SyncConfig().merge({"dest": "oci:mirror"}).dest == f"oci:{Path.cwd() / 'mirror'}"


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.yaml: cannot read config file"):
        load_config(tmp_path / "missing.yaml")


def test_credential_references_resolve_to_real_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    authfile = tmp_path / "auth.json"
    authfile.write_text(json.dumps({"auths": {"registry.example.com:5000": {"auth": "bWlycm9yOnMzY3JldA=="}}}))
    helper = tmp_path / "bin" / "docker-credential-fake"
    helper.parent.mkdir()
    helper.write_text('#!/bin/sh\nread key\necho "{\\"Username\\": \\"bot\\", \\"Secret\\": \\"tok-$key\\"}"\n')
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{helper.parent}{os.pathsep}{os.environ['PATH']}")
    cfg = load_config(
        write(
            tmp_path,
            "credentials:\n"
            "  docker.io: {username_env: HUB_USER, password_env: HUB_TOKEN}\n"
            "  registry.example.com:5000: {authfile: auth.json}\n"
            "  ghcr.io: {helper: fake}\n",
        )
    )
    env = {"HUB_USER": "alice", "HUB_TOKEN": "dckr_pat_secret"}
    hub = cfg.resolve_credentials("index.docker.io", env)
    assert hub is not None and (hub.username, hub.password) == ("alice", "dckr_pat_secret")
    assert "dckr_pat_secret" not in repr(hub)
    reg = cfg.resolve_credentials("registry.example.com:5000", env)
    assert reg is not None and (reg.username, reg.password) == ("mirror", "s3cret")
    gh = cfg.resolve_credentials("ghcr.io", env)
    assert gh is not None and (gh.username, gh.password) == ("bot", "tok-ghcr.io")
    # A registry without an entry falls back to the default lookup (HUBMIRROR_<HOST>_* variables).
    quay = cfg.resolve_credentials("quay.io", {"HUBMIRROR_QUAY_IO_USERNAME": "q", "HUBMIRROR_QUAY_IO_PASSWORD": "p"})
    assert quay is not None and quay.username == "q"
    with pytest.raises(CredentialsError, match="environment variable HUB_TOKEN is not set") as exc:
        cfg.resolve_credentials("docker.io", {"HUB_USER": "alice"})
    assert "alice" not in str(exc.value)


def test_requests_are_paced_by_default_only_when_the_source_is_docker_hub() -> None:
    """The bench's no-op `sync --list` from a local registry spent most of its time waiting on a 20/s pace
    meant for Docker Hub's abuse limit: another source (a pull-through cache) is unpaced unless asked."""
    assert SyncConfig().source_rate == 20.0
    assert SyncConfig().merge({"source": "registry-1.docker.io"}).source_rate == 20.0
    assert SyncConfig().merge({"source": "cache.example:5000"}).source_rate is None
    assert SyncConfig().merge({"source": "cache.example:5000", "hub_rate": 5}).source_rate == 5.0
    assert SyncConfig().merge({"hub_rate": 0}).source_rate is None
