"""The shipped deployments (deploy/): each file passes a real validator where one exists, and every
hubmirror command it runs parses against the real CLI (the Typer app), with the config it names."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from hubmirror.cli import app
from hubmirror.config import load_config, parse_config

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
HUBMIRROR = Path(sys.executable).with_name("hubmirror")


def tool(name: str) -> str:
    """The validator *name*: from the virtualenv (pip dev dependencies) or PATH; skip when missing."""
    found = shutil.which(name, path=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    if found is None:
        pytest.skip(f"{name} is not installed (scripts/install installs it)")
    return found


def validate(*argv: str) -> str:
    p = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 0, f"{' '.join(argv)} failed:\n{p.stdout}\n{p.stderr}"
    return p.stdout + p.stderr


def check_cli(argv: list[str]) -> dict[str, Any]:
    """Parse *argv* (``hubmirror COMMAND ...``) with the real CLI; returns the command's parameters.
    An unknown flag, a missing required option or a bad value fails the test."""
    assert Path(argv[0]).name == "hubmirror", argv
    commands: dict[str, Any] = getattr(typer.main.get_command(app), "commands", {})
    name, *rest = argv[1:]
    assert name in commands, f"hubmirror has no command {name!r}"
    try:
        ctx = commands[name].make_context(name, list(rest))
    except Exception as e:  # typer's click: UsageError, NoSuchOption, BadParameter, MissingParameter
        if not hasattr(e, "format_message"):
            raise
        raise AssertionError(f"{shlex.join(argv)}: {e.format_message()}") from None
    return dict(ctx.params)


def check_config(params: dict[str, Any], files: dict[str, str], needs: tuple[str, ...] = ("dest", "schedule")) -> None:
    """The ``--config`` of a command is one of the shipped configs (path inside the container → text), and it
    sets *needs* (a server needs a destination and a schedule; the workflow gives --dest itself)."""
    path = str(params["config"])
    assert path in files, f"--config {path} is not a config that ships with the deployment"
    cfg = parse_config(files[path], name=path)
    assert all(getattr(cfg, key) for key in needs), (path, needs)


def test_dockerfile_passes_hadolint_runs_hubmirror_serve_as_non_root_with_state_on_a_volume() -> None:
    path = DEPLOY / "Dockerfile"
    validate(tool("hadolint"), str(path))
    lines = re.sub(r"\\\n", " ", path.read_text()).splitlines()
    instructions = [line.strip().split(None, 1) for line in lines if line.strip() and not line.startswith("#")]
    final = instructions[max(i for i, (op, _) in enumerate(instructions) if op == "FROM") :]
    ops: dict[str, str] = {}
    for op, arg in final:
        ops[op] = arg
    assert "slim" in ops["FROM"]
    assert ops["USER"].split(":")[0] not in ("root", "0")
    assert "/var/lib/hubmirror" in json.loads(ops["VOLUME"])
    assert "/healthz" in ops["HEALTHCHECK"]
    argv = json.loads(ops["ENTRYPOINT"]) + json.loads(ops["CMD"])
    params = check_cli(argv)
    assert params["listen"] == "0.0.0.0:8080" and ops["EXPOSE"] == "8080"
    # The image's default command reads the config that compose and Kubernetes mount there.
    check_config(params, {"/etc/hubmirror/hubmirror.yaml": (DEPLOY / "compose" / "hubmirror.yaml").read_text()})


def test_compose_file_passes_the_compose_spec_and_runs_serve_next_to_a_distribution_registry() -> None:
    path = DEPLOY / "compose" / "compose.yaml"
    validate(tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path))
    doc = yaml.safe_load(path.read_text())
    services = doc["services"]
    assert services["registry"]["image"].startswith("registry:2")
    hm = services["hubmirror"]
    assert (path.parent / hm["build"]["context"] / hm["build"]["dockerfile"]).resolve() == (DEPLOY / "Dockerfile")
    params = check_cli(["hubmirror", *hm["command"]])
    mounts = {m.split(":")[1]: m.split(":")[0] for m in hm["volumes"]}
    config_file = (path.parent / mounts[str(params["config"])]).read_text()
    check_config(params, {str(params["config"]): config_file})
    cfg = parse_config(config_file)
    assert cfg.dest is not None and cfg.dest.split("/")[0] == "registry:5000"  # the registry service
    assert mounts["/var/lib/hubmirror"] in doc["volumes"]  # the state on a named volume
    assert cfg.state.is_relative_to("/var/lib/hubmirror")
    assert all(p.startswith("127.0.0.1:") for s in services.values() for p in s.get("ports", []))
    assert {"HUBMIRROR_WEBHOOK_SECRET", "HUBMIRROR_API_TOKEN"} <= set(hm["environment"])


def _k8s(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((DEPLOY / "kubernetes" / name).read_text()) if d]


def test_kubernetes_manifests_pass_strict_schema_validation_and_run_the_real_cli() -> None:
    # The manifests one by one (tests/deploy/test_kubernetes.py validates what kustomize renders from them).
    files = sorted(str(p) for p in (DEPLOY / "kubernetes").glob("*.yaml") if p.name != "kustomization.yaml")
    out = validate(tool("kubernetes-validate"), "--strict", *files)
    assert "passed" in out and "failed" not in out
    (config_map,) = _k8s("config.yaml")
    configs = {f"/etc/hubmirror/{k}": v for k, v in config_map["data"].items()}
    docs = {d["kind"]: d for name in ("serve.yaml", "cronjob.yaml") for d in _k8s(name)}
    pvcs = {
        d["metadata"]["name"]
        for n in ("serve.yaml", "cronjob.yaml")
        for d in _k8s(n)
        if d["kind"] == "PersistentVolumeClaim"
    }

    deployment = docs["Deployment"]["spec"]
    pod = deployment["template"]["spec"]
    (container,) = pod["containers"]
    params = check_cli(["hubmirror", *container["args"]])  # the image's ENTRYPOINT is hubmirror
    check_config(params, configs)
    port = int(str(params["listen"]).rsplit(":", 1)[1])
    assert str(params["listen"]).startswith("0.0.0.0:")  # reachable by the Service and the probes
    assert [p["containerPort"] for p in container["ports"]] == [port]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert deployment["replicas"] == 1 and deployment["strategy"]["type"] == "Recreate"
    assert pod["securityContext"]["runAsNonRoot"] is True
    claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    assert claims and claims <= pvcs
    assert docs["Service"]["spec"]["ports"][0]["targetPort"] == container["ports"][0]["name"]

    cron = docs["CronJob"]["spec"]
    assert cron["concurrencyPolicy"] == "Forbid"
    job_pod = cron["jobTemplate"]["spec"]["template"]["spec"]
    (sync,) = job_pod["containers"]
    assert sync["command"][:2] == ["/bin/sh", "-c"] and 'hubmirror "$@"' in sync["command"][2]
    params = check_cli(["hubmirror", *sync["args"]])  # the script passes its arguments to hubmirror
    check_config(params, configs)
    claims = {v["persistentVolumeClaim"]["claimName"] for v in job_pod["volumes"] if "persistentVolumeClaim" in v}
    assert claims and claims <= pvcs


def _unit(path: Path) -> dict[str, str]:
    return dict(
        line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and not line.startswith("#")
    )


def test_systemd_units_pass_systemd_analyze_verify_and_run_the_real_cli(tmp_path: Path) -> None:
    analyze = tool("systemd-analyze")
    units = sorted(p for p in (DEPLOY / "systemd").iterdir() if p.suffix in (".service", ".timer"))
    # verify insists that ExecStart's binary exists: where hubmirror is not installed at the units' path,
    # check copies that point at this hubmirror instead (the only change).
    for unit in units:
        text = unit.read_text()
        for m in re.finditer(r"^ExecStart=(\S+)", text, re.M):
            if not Path(m.group(1)).exists():
                text = text.replace(m.group(1), str(HUBMIRROR))
        (tmp_path / unit.name).write_text(text)
    validate(analyze, "verify", *(str(tmp_path / u.name) for u in units))

    serve, sync, timer = (
        _unit(DEPLOY / "systemd" / n)
        for n in ("hubmirror-serve.service", "hubmirror-sync.service", "hubmirror-sync.timer")
    )
    params = check_cli(shlex.split(serve["ExecStart"]))
    assert str(params["listen"]).startswith("127.0.0.1:")
    config = {"/etc/hubmirror/hubmirror.yaml": (DEPLOY / "systemd" / "hubmirror.yaml").read_text()}
    check_config(params, config)
    params = check_cli(shlex.split(sync["ExecStart"]))
    check_config(params, config, needs=("dest",))
    assert sync["Type"] == "oneshot" and sync["SuccessExitStatus"] == "75"  # deferred work is not a failure
    # The state and cache land in the directories systemd gives the dynamic user.
    for unit in (serve, sync):
        env = dict(kv.split("=", 1) for kv in shlex.split(unit["Environment"]))
        assert env["XDG_STATE_HOME"] == "/var/lib/" + unit["StateDirectory"]
        assert env["XDG_CACHE_HOME"] == "/var/cache/" + unit["CacheDirectory"]
    assert "state" not in yaml.safe_load(config["/etc/hubmirror/hubmirror.yaml"])
    cal = validate(analyze, "calendar", timer["OnCalendar"])
    assert "Next elapse" in cal


def test_github_workflow_passes_actionlint_and_runs_sync_every_six_hours_keeping_state_and_report() -> None:
    path = DEPLOY / "github" / "hubmirror-sync.yml"
    validate(tool("actionlint"), str(path))
    validate(tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(path))
    doc = yaml.safe_load(path.read_text())
    on = doc[True] if True in doc else doc["on"]  # YAML 1.1 reads the key `on` as true
    assert on["schedule"] == [{"cron": "0 */6 * * *"}]
    (job,) = doc["jobs"].values()
    steps = job["steps"]
    uses = [s.get("uses", "") for s in steps]
    assert any(u.startswith("actions/cache/restore@") for u in uses)
    assert any(u.startswith("actions/cache/save@") for u in uses)
    state_dir = job["env"]["XDG_STATE_HOME"]
    cached = next(s["with"]["path"] for s in steps if s.get("uses", "").startswith("actions/cache/save@"))
    assert state_dir.endswith(f"/{cached}/state")  # the default state path is inside the cached directory
    assert "secrets." in job["env"]["HUBMIRROR_DOCKER_IO_PASSWORD"]
    commands = [
        shlex.split(line.split("|")[-1].strip())
        for s in steps
        for line in s.get("run", "").splitlines()
        if line.strip().split("|")[-1].strip().startswith("hubmirror ")
    ]
    assert [c[1] for c in commands] == ["login", "sync"]
    for argv in commands:
        params = check_cli(argv)
    assert params["report"] is not None
    report = str(params["report"])
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert upload["with"]["path"] == report and upload["if"] == "always()"
    assert str(params["config"]) == "deploy/github/hubmirror.yaml"  # the workflow's own config
    config = Path(__file__).resolve().parents[1] / str(params["config"])
    load_config(config)
    assert "state" not in yaml.safe_load(config.read_text())  # the default: under XDG_STATE_HOME, in the cache
    # tests/deploy/test_github_workflow.py runs the workflow's steps as a non-root runner.
