"""The scale-out compose deployment (deploy/compose/scale-out/): three `hubmirror sync --daemon` workers and
`hubmirror serve` on a PostgreSQL service's state, next to a Distribution registry.

There is no Docker engine here, so the file is checked against the compose spec's schema and for what the
engine would refuse or get wrong (services, volumes, the variables it interpolates, the config's state
against the postgres service), and its containers' commands run as the engine would run them (the image's
environment, the service's `environment:` with compose's interpolation, the mounted config) with this
hubmirror, against a test PostgreSQL in place of the postgres service, the Hub emulator and a registry.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_support import DEPLOY, emulated_config, without_docker_credentials
from test_sync_support import Env
from test_workers import REPOS, assert_every_tag_right, hold_until_joined, repos_library

from hubmirror.config import parse_config
from hubmirror.state import State, redact_dsn
from hubmirror.testing.postgres import PostgresServer
from hubmirror.testing.registry import free_port

SCALE = DEPLOY / "compose" / "scale-out"
FILE = SCALE / "compose.yaml"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(FILE.read_text())  # (YAML merge keys resolved, as compose does)
    return data


def interpolate(value: str, variables: dict[str, str]) -> str:
    """Compose's interpolation of ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}`` (an unset or empty
    VAR with ``:?`` stops compose with the error: an `AssertionError` here)."""

    def one(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        value = variables.get(name, "")
        if value:
            return value
        assert op != ":?", f"compose stops: {arg}"
        return (arg or "") if op == ":-" else ""

    return _VAR.sub(one, value)


def _image() -> tuple[dict[str, str], list[str]]:
    """deploy/Dockerfile's final stage: its ENV and its VOLUMEs."""
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    final = text[text.rindex("\nFROM ") :]
    env: dict[str, str] = {}
    volumes: list[str] = []
    for line in final.splitlines():
        if line.startswith("ENV "):
            env.update(kv.split("=", 1) for kv in shlex.split(line[4:]))
        if line.startswith("VOLUME "):
            volumes += json.loads(line[7:])
    return env, volumes


def test_the_scale_out_compose_file_passes_the_compose_spec_and_wires_postgres_workers_and_serve() -> None:
    tool = shutil.which("check-jsonschema", path=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    if tool is None:
        pytest.skip("check-jsonschema is not installed (scripts/install installs it)")
    p = subprocess.run(
        [tool, "--builtin-schema", "vendor.compose-spec", str(FILE)], capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 0, p.stdout + p.stderr
    doc = _compose()
    services = doc["services"]
    assert set(services) == {"registry", "postgres", "worker", "hubmirror"}
    assert services["postgres"]["image"].split(":")[0] == "postgres"  # the official image
    assert services["worker"]["deploy"]["replicas"] == 3
    assert "scale" not in services["worker"] and "container_name" not in services["worker"]  # 3 containers

    # Volumes: every named one declared and used; the workers' library clones never shared (the image's
    # VOLUME gives each container its own /var/lib/hubmirror).
    used = {v.split(":")[0] for s in services.values() for v in s.get("volumes", []) if not v.startswith(".")}
    assert used == set(doc["volumes"])
    _, image_volumes = _image()
    for name in ("worker", "hubmirror"):
        mounts = {v.split(":")[1]: v.split(":")[0] for v in services[name]["volumes"]}
        assert "/var/lib/hubmirror" in image_volumes and "/var/lib/hubmirror" not in mounts
        assert (FILE.parent / mounts["/etc/hubmirror/hubmirror.yaml"]).resolve() == SCALE / "hubmirror.yaml"
        build = services[name]["build"]
        assert (FILE.parent / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
        deps = services[name]["depends_on"]
        assert deps["postgres"]["condition"] == "service_healthy" and "registry" in deps
    # The image's HEALTHCHECK asks serve's /healthz: the sync daemons, which do not listen, turn it off.
    assert "/healthz" in (DEPLOY / "Dockerfile").read_text()
    assert services["worker"]["healthcheck"] == {"disable": True} and "healthcheck" not in services["hubmirror"]
    assert services["hubmirror"]["command"][-2:] == ["--listen", "0.0.0.0:8080"]
    assert all(p.startswith("127.0.0.1:") for s in services.values() for p in s.get("ports", []))
    assert "ports" not in services["postgres"]  # reachable inside the compose network only

    # One password, never written down: the variable compose stops on when unset, for the server and libpq.
    password = services["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert re.fullmatch(r"\$\{HUBMIRROR_POSTGRES_PASSWORD:\?[^}]+\}", password)
    for name in ("worker", "hubmirror"):
        assert services[name]["environment"]["PGPASSWORD"] == password
    with pytest.raises(AssertionError, match="set HUBMIRROR_POSTGRES_PASSWORD"):
        interpolate(password, {})
    # The config's state is the postgres service as the image creates it, without a password.
    cfg = parse_config((SCALE / "hubmirror.yaml").read_text())
    pg = services["postgres"]["environment"]
    url = str(cfg.state)
    assert redact_dsn(url) == url == f"postgresql://{pg['POSTGRES_USER']}@postgres:5432/{pg['POSTGRES_DB']}"
    assert cfg.dest is not None and cfg.dest.split("/")[0] == "registry:5000" and cfg.schedule
    assert {"HUBMIRROR_WEBHOOK_SECRET", "HUBMIRROR_API_TOKEN"} <= set(services["hubmirror"]["environment"])


def test_the_single_process_compose_file_is_kept_beside_it() -> None:
    single = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())
    assert single["name"] != _compose()["name"]  # another project: its own registry volume and state
    assert "postgres" not in single["services"]
    assert not str(parse_config((DEPLOY / "compose" / "hubmirror.yaml").read_text()).state).startswith("postgres")


class Container:
    """One container of a service as the engine runs it, this hubmirror as the image's entrypoint."""

    def __init__(self, service: dict[str, Any], root: Path, config: Path, variables: dict[str, str]) -> None:
        var = root / "var-lib-hubmirror"  # the container's own volume (the image's VOLUME)
        var.mkdir(parents=True)
        image_env, _ = _image()
        self.env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(root)}
        self.env.update({k: v.replace("/var/lib/hubmirror", str(var)) for k, v in image_env.items()})
        self.env.update({k: interpolate(str(v), variables) for k, v in service["environment"].items()})
        command = [a.replace("/etc/hubmirror/hubmirror.yaml", str(config)) for a in service["command"]]
        self.argv = ["hubmirror", *command]  # the image's ENTRYPOINT
        self.log = root / "log"

    def start(self, extra_env: dict[str, str], *, listen: str | None = None) -> subprocess.Popen[str]:
        argv = list(self.argv)
        if listen is not None:
            argv[argv.index("--listen") + 1] = listen
        out = self.log.open("w")
        return subprocess.Popen(argv, env={**self.env, **extra_env}, stdout=out, stderr=subprocess.STDOUT, text=True)


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def test_the_workers_and_serve_run_their_commands_on_one_postgresql_state(env: Env, postgres: PostgresServer) -> None:
    services = _compose()["services"]
    where = postgres.new_database()
    text = (SCALE / "hubmirror.yaml").read_text()
    config = env.root / "hubmirror.yaml"
    images = [f"r{r}" for r in range(1, REPOS + 1)]
    config.write_text(emulated_config(text, env, postgres, where.rsplit("/", 1)[1], images))
    variables = {"HUBMIRROR_POSTGRES_PASSWORD": postgres.password}  # the one variable the file requires
    extra = without_docker_credentials(env)
    env.commit(repos_library())
    env.seed()
    env.hub.set_delay(3600)  # the copies wait until the workers have joined the run (a busy machine)

    replicas = services["worker"]["deploy"]["replicas"]
    workers = [
        Container(services["worker"], env.root / f"worker-{i}", config, variables).start(extra) for i in range(replicas)
    ]
    serve = Container(services["hubmirror"], env.root / "hubmirror", config, variables)
    base = f"http://127.0.0.1:{free_port()}"
    server = serve.start(extra, listen=base.removeprefix("http://"))
    procs = [*workers, server]
    try:
        hold_until_joined(env, where, replicas, then=0.05, timeout=180)
        # Each daemon ends its run and waits for the next time of the schedule.
        deadline = time.monotonic() + 300
        logs = [env.root / f"worker-{i}" / "log" for i in range(replicas)]
        while not all("next run at" in log.read_text() for log in logs):
            assert time.monotonic() < deadline and all(p.poll() is None for p in workers), [
                log.read_text() for log in logs
            ]
            time.sleep(0.5)
        while not _ready(base + "/readyz"):
            assert time.monotonic() < deadline and server.poll() is None, serve.log.read_text()
            time.sleep(0.5)
        assert all("exit code 0;" in log.read_text() for log in logs)
        assert_every_tag_right(env)
        with State.open(where) as st:
            runs = st.runs()
            assert runs and all(r.status == "completed" for r in runs)
            first = runs[-1]
            assert len(st.run_work(first.id)[0]) >= replicas  # the workers (and serve, if in time) shared it
        for p in procs:
            p.send_signal(signal.SIGTERM)
        codes = [p.wait(timeout=180) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    outputs = [log.read_text() for log in logs] + [serve.log.read_text()]
    assert codes == [0] * len(procs), outputs
    assert all(postgres.password not in out for out in outputs)
