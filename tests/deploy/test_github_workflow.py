"""The GitHub Actions workflow (deploy/github/hubmirror-sync.yml), run as a runner runs it: each `run:` step in
``bash --noprofile --norc -eo pipefail`` as a non-root user, with the job's and the step's `env:` (expressions
filled in), in a workspace it owns; `actions/cache` restore and save, checkout and the artifact upload played
by the test; the install step replaced by this test run's hubmirror on PATH. The Hub is the emulator and the
mirror registry a real registry with a password, so `hubmirror login` and the sync do what they do on GitHub.

Only the config's `library`, `source` and `images` are pointed at the test's Hub and library: every other key
(the state's place above all) is the shipped one.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_support import DEPLOY, User, as_user  # noqa: F401  (as_user: the fixture)
from test_sync_support import Env

from _auth import PASSWORD, USER
from hubmirror.state import State
from hubmirror.testing.registry import Registry

WORKFLOW = DEPLOY / "github" / "hubmirror-sync.yml"
NAMESPACE = "hub"
BASH = ["bash", "--noprofile", "--norc", "-eo", "pipefail"]  # GitHub's `shell: bash` on Linux runners


@dataclass
class StepResult:
    name: str
    outcome: str  # success, failure, skipped
    stdout: str = ""
    stderr: str = ""


@dataclass
class Run:
    """One workflow run: what each step did, the workspace, the step outputs."""

    workspace: Path
    steps: list[StepResult] = field(default_factory=list)

    def step(self, name: str) -> StepResult:
        return next(s for s in self.steps if s.name == name)

    @property
    def conclusion(self) -> str:
        return "failure" if any(s.outcome == "failure" for s in self.steps) else "success"


class Runner:
    """Plays a GitHub-hosted runner for this workflow: a fresh workspace and home per run, one cache store."""

    def __init__(self, user: User, secrets: Mapping[str, str], edit_config: Callable[[dict[str, Any]], None]) -> None:
        self.user = user
        self.secrets = dict(secrets)
        self.edit_config = edit_config
        self.cache: dict[str, Path] = {}  # actions/cache: key -> saved directory
        self.runs = 0
        doc = yaml.safe_load(WORKFLOW.read_text())
        (self.job,) = doc["jobs"].values()

    def expr(self, text: str, workspace: Path) -> str:
        values = {"github.workspace": str(workspace), "github.run_id": str(self.runs)}

        def one(m: re.Match[str]) -> str:
            name = m.group(1).strip()
            if name.startswith("secrets."):
                return self.secrets.get(name.removeprefix("secrets."), "")  # unset secrets are empty
            assert name in values, f"the test does not know the expression ${{{{ {name} }}}}"
            return values[name]

        return re.sub(r"\$\{\{(.*?)\}\}", one, str(text))

    def run(self, *, edit_script: Callable[[str], str] = lambda s: s) -> Run:
        self.runs += 1
        top = self.user.root / f"run-{self.runs}"
        workspace, home = top / "workspace", top / "home"
        workspace.mkdir(parents=True)
        home.mkdir()
        self.user.own(top)
        run = Run(workspace)
        env = {**self.user.base_env(), "HOME": str(home), "GITHUB_WORKSPACE": str(workspace), "CI": "true"}
        env.update({k: self.expr(v, workspace) for k, v in self.job["env"].items()})
        failed = False
        for i, step in enumerate(self.job["steps"]):
            name = step.get("name") or step.get("uses") or f"step {i}"
            cond = step.get("if")
            assert cond in (None, "always()"), f"{name}: the test does not know `if: {cond}`"
            if failed and cond != "always()":
                run.steps.append(StepResult(name, "skipped"))
                continue
            with_ = {k: self.expr(v, workspace) for k, v in (step.get("with") or {}).items()}
            if "uses" in step:
                outcome = self.action(step["uses"], with_, workspace)
                run.steps.append(StepResult(name, outcome))
            elif step["run"].strip() == "python -m pip install .":
                run.steps.append(StepResult(name, "success"))  # the install: this test run's hubmirror is on PATH
            else:
                result = self.script(name, edit_script(step["run"]), env, step.get("env") or {}, workspace)
                run.steps.append(result)
            failed = failed or run.steps[-1].outcome == "failure"
        return run

    def script(self, name: str, script: str, env: dict[str, str], step_env: dict[str, str], ws: Path) -> StepResult:
        output = ws.parent / f"output-{len(name)}"
        output.touch()
        self.user.own(output)
        path = ws.parent / "step.sh"
        path.write_text(self.expr(script, ws))
        path.chmod(0o755)
        full = {**env, **{k: self.expr(v, ws) for k, v in step_env.items()}, "GITHUB_OUTPUT": str(output)}
        p = self.user.run([*BASH, str(path)], env=full, cwd=ws)
        return StepResult(name, "success" if p.returncode == 0 else "failure", p.stdout, p.stderr)

    def action(self, uses: str, with_: dict[str, str], ws: Path) -> str:
        action = uses.split("@")[0]
        if action == "actions/checkout":
            shutil.copytree(DEPLOY, ws / "deploy")
            config = ws / "deploy" / "github" / "hubmirror.yaml"
            data = yaml.safe_load(config.read_text())
            self.edit_config(data)
            config.write_text(yaml.safe_dump(data))
            self.user.own(ws)
        elif action == "actions/setup-python":
            pass
        elif action == "actions/cache/restore":
            keys = [with_["key"], *(k for k in with_.get("restore-keys", "").splitlines() if k.strip())]
            hit = next((self.cache[k] for key in keys for k in reversed(self.cache) if k.startswith(key)), None)
            if hit is not None:
                shutil.copytree(hit, ws / with_["path"])
                self.user.own(ws / with_["path"])
        elif action == "actions/cache/save":
            src = ws / with_["path"]
            if with_["key"] not in self.cache and src.exists():  # a cache key is written once
                dst = self.user.root / "cache" / with_["key"]
                shutil.copytree(src, dst)
                self.cache[with_["key"]] = dst
        elif action == "actions/upload-artifact":
            if not (ws / with_["path"]).exists() and with_.get("if-no-files-found") == "error":
                return "failure"
        else:
            raise AssertionError(f"the test does not play the action {uses}")
        return "success"


@pytest.fixture
def runner(env: Env, as_user: User) -> Runner:  # noqa: F811
    mirror: Registry = env.make_registry(username=USER, password=PASSWORD)
    env.seed()
    library = as_user.root / "official-images"
    shutil.copytree(env.library_repo, library)
    as_user.own(library)

    def edit(data: dict[str, Any]) -> None:
        data.update({"library": str(library), "source": env.hub.host, "images": ["pyish", "tiny"]})

    secrets = {"MIRROR_REGISTRY": mirror.host, "MIRROR_NAMESPACE": NAMESPACE, "MIRROR_USERNAME": USER}
    secrets["MIRROR_PASSWORD"] = PASSWORD
    r = Runner(as_user, secrets, edit)
    r.mirror = mirror  # type: ignore[attr-defined]
    return r


def _state(run: Run) -> Path:
    return run.workspace / ".hubmirror" / "state" / "hubmirror" / "state.db"


def test_workflow_runs_as_a_non_root_runner_and_keeps_its_state_in_the_cache(env: Env, runner: Runner) -> None:
    env.hub.set_limit(100, remaining=12)  # a shared runner IP: little of the quota is left

    first = runner.run()

    sync = first.step("Sync")
    assert first.conclusion == "success", [(s.name, s.outcome, s.stderr[-2000:]) for s in first.steps]
    assert "::warning::work deferred by the pull budget (exit code 75)" in sync.stdout, sync.stdout + sync.stderr
    assert _state(first).is_file()  # the default state, inside the directory actions/cache keeps
    assert (first.workspace / "report.json").is_file()
    assert len(runner.cache) == 1
    spent_first = env.hub.manifest_gets()
    assert 0 < spent_first <= 12 - 10  # the config's reserve of 10 is kept

    env.hub.refill()
    second = runner.run()  # a new runner: fresh workspace and home, the state from the cache

    assert second.conclusion == "success", [(s.name, s.outcome, s.stderr[-2000:]) for s in second.steps]
    assert "::warning::" not in second.step("Sync").stdout
    with State.open(_state(second)) as state:
        assert state.deferred() == []
        runs = [r.status for r in state.runs()]
    assert sorted(runs) == ["completed", "deferred"]  # the first run's record came back through the cache
    spent = env.hub.manifest_gets()

    third = runner.run()
    assert third.conclusion == "success"
    assert env.hub.manifest_gets() == spent  # nothing changed: HEADs only, no pulls


def test_a_mistyped_flag_in_the_workflow_fails_the_job(env: Env, runner: Runner) -> None:
    run = runner.run(edit_script=lambda s: s.replace("--report report.json", "--reprot report.json"))
    sync = run.step("Sync")
    assert sync.outcome == "failure" and "No such option" in sync.stderr, sync.stderr
    assert run.conclusion == "failure"
    assert env.hub.manifest_gets() == 0
    assert run.step("Keep the state for the next run").outcome == "success"  # if: always()
