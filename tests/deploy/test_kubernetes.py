"""The Kubernetes manifests as a cluster would get them: rendered by kustomize (`kubectl kustomize` where
kubectl is installed; its `images:` transform applied by the test otherwise), validated with
`kubernetes-validate --strict`; the CronJob's container command run for real (a fake hubmirror for each exit
code, the real one against the Hub emulator), and its exit codes fed to an evaluator of the Job controller's
documented podFailurePolicy and backoffLimit rules (k8s_support). The scale-out shape is
test_kubernetes_scale_out.py's.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_support import DEPLOY
from k8s_support import job_after, render
from k8s_support import pod_specs as _pod_specs
from test_sync_support import Env

from hubmirror.config import parse_config

K8S = DEPLOY / "kubernetes"


# -- rendering ---------------------------------------------------------------------------------------------


def _kustomization() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return data


def _with_resources(tmp: Path, resources: list[str]) -> Path:
    """A copy of deploy/kubernetes whose kustomization lists *resources* (the CronJob variant)."""
    d = tmp / "kubernetes"
    shutil.copytree(K8S, d)
    k = _kustomization()
    k["resources"] = resources
    (d / "kustomization.yaml").write_text(yaml.safe_dump(k))
    return d


VARIANTS = {"serve": None, "cronjob": ["config.yaml", "cronjob.yaml"]}


@pytest.mark.parametrize("variant", VARIANTS)
def test_rendered_manifests_pass_strict_validation_and_take_the_image_from_the_kustomization(
    variant: str, tmp_path: Path
) -> None:
    resources = VARIANTS[variant]
    directory = K8S if resources is None else _with_resources(tmp_path, resources)
    docs = render(directory)
    out = tmp_path / "rendered.yaml"
    out.write_text(yaml.safe_dump_all(docs))
    tool = shutil.which("kubernetes-validate", path=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    assert tool is not None, "kubernetes-validate is a dev dependency"
    p = subprocess.run([tool, "--strict", str(out)], capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 0 and "failed" not in p.stdout, p.stdout + p.stderr

    (rule,) = _kustomization()["images"]
    kinds = {d["kind"] for d in docs}
    assert ("CronJob" in kinds) == (variant == "cronjob") and ("Deployment" in kinds) == (variant == "serve")
    images = [c["image"] for d in docs for pod in _pod_specs(d) for c in pod["containers"]]
    assert images and all(i == f"{rule['newName']}:{rule['newTag']}" for i in images)
    assert all("/" in i.split(":")[0] and "." in i.split("/")[0] for i in images)  # a registry host, not Docker Hub
    # The manifests themselves name only the placeholder the kustomization replaces.
    raw = [
        c["image"]
        for r in ("serve.yaml", "cronjob.yaml")
        for d in yaml.safe_load_all((K8S / r).read_text())
        if d
        for pod in _pod_specs(d)
        for c in pod["containers"]
    ]
    assert set(raw) == {rule["name"]}


def test_the_shipped_kustomization_never_deploys_serve_and_the_cronjob_together() -> None:
    resources = _kustomization()["resources"]
    assert not {"serve.yaml", "cronjob.yaml"} <= set(resources)  # two syncs, two states, one destination
    assert "secret.example.yaml" not in resources  # created with kubectl, never committed


# -- the CronJob -------------------------------------------------------------------------------------------


def _cronjob() -> dict[str, Any]:
    (doc,) = [d for d in yaml.safe_load_all((K8S / "cronjob.yaml").read_text()) if d and d["kind"] == "CronJob"]
    return doc


def _container() -> dict[str, Any]:
    (c,) = _cronjob()["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    return c


def _fake_hubmirror(bin_dir: Path, body: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "hubmirror").write_text(f"#!/bin/sh\n{body}\n")
    (bin_dir / "hubmirror").chmod(0o755)


def _container_argv(mounts: dict[str, Path] | None = None) -> list[str]:
    c = _container()
    argv = [*c["command"], *c["args"]]
    for src, dst in (mounts or {}).items():
        argv = [a.replace(src, str(dst)) for a in argv]
    return argv


def test_the_cronjob_container_runs_under_sh_and_its_script_passes_shellcheck(tmp_path: Path) -> None:
    c = _container()
    assert c["command"][:2] == ["/bin/sh", "-c"]  # python:3.12-slim's /bin/sh (dash); no bash in the image
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (scripts/test installs it)")
    script = tmp_path / "sync.sh"
    script.write_text("#!/bin/sh\n" + c["command"][2])
    p = subprocess.run(["shellcheck", "-s", "sh", str(script)], capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stdout


@pytest.mark.parametrize(
    ("hubmirror_exit", "job"),
    [(0, "Complete"), (75, "Complete"), (1, "Failed"), (2, "Failed"), (137, "Failed")],
)
def test_the_cronjob_completes_on_a_deferred_run_and_fails_on_a_failure_without_looping(
    tmp_path: Path, hubmirror_exit: int, job: str
) -> None:
    _fake_hubmirror(tmp_path / "bin", f'echo "args: $*"; exit {hubmirror_exit}')
    env = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin"}
    p = subprocess.run(_container_argv(), env=env, capture_output=True, text=True, timeout=30, check=False)
    assert "args: sync --config /etc/hubmirror/hubmirror.yaml" in p.stdout  # hubmirror got the args as given
    spec = _cronjob()["spec"]["jobTemplate"]["spec"]
    # Pods in turn, each exiting as this one did: a Job that neither ends nor fails would loop.
    assert job_after(spec, _container()["name"], [p.returncode] * 50) == job, (p.returncode, p.stderr)
    if hubmirror_exit == 75:
        assert p.returncode == 0 and "deferred" in p.stderr


def test_the_cronjob_rules_retry_only_a_disrupted_pod() -> None:
    spec = _cronjob()["spec"]["jobTemplate"]["spec"]
    name = _container()["name"]
    assert spec["backoffLimit"] == 0 and _cronjob()["spec"]["concurrencyPolicy"] == "Forbid"
    # Evicted or preempted mid-run (SIGKILL after the grace period): a new pod, which then completes.
    assert job_after(spec, name, [137, 0], frozenset({"DisruptionTarget"})) == "Complete"
    # No exit code alone is ignored: nothing restarts a pod at once, as Ignore on 2 did before.
    for code in range(1, 256):
        assert job_after(spec, name, [code] * 3) == "Failed", code


def test_the_cronjob_container_passes_sigterm_on_to_hubmirror(tmp_path: Path) -> None:
    """On eviction or `kubectl delete`, the kubelet sends SIGTERM to the container's PID 1 (the shell): it
    reaches hubmirror, which finishes the items in flight, records them and exits 75 (work deferred)."""
    marker = tmp_path / "got-term"
    _fake_hubmirror(tmp_path / "bin", f"trap 'touch {marker}; exit 75' TERM\necho started\nwhile :; do sleep 0.1; done")
    env = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin"}
    proc = subprocess.Popen(_container_argv(), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "started"
    time.sleep(0.2)  # the shell reaches `wait` (a signal before its trap is set would end it at once)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    assert marker.exists()


def test_the_cronjob_container_with_the_real_hubmirror_defers_and_fails_as_the_rules_expect(env: Env) -> None:
    """The container's command and the ConfigMap's config as the pod mounts them (paths under the test's
    directory), the Hub and library pointed at the emulator."""
    etc, var = env.root / "etc-hubmirror", env.root / "var-lib-hubmirror"
    etc.mkdir()
    var.mkdir()
    mounts = {"/etc/hubmirror": etc, "/var/lib/hubmirror": var}
    (config_map,) = [d for d in yaml.safe_load_all((K8S / "config.yaml").read_text()) if d]
    text = config_map["data"]["hubmirror.yaml"]
    for src, dst in mounts.items():
        text = text.replace(src, str(dst))
    data = yaml.safe_load(text)
    data.update(
        {"library": str(env.library_repo), "source": env.hub.host, "dest": env.dest_prefix, "images": ["pyish"]}
    )
    data["insecure"] = [env.dest.host]
    (etc / "hubmirror.yaml").write_text(yaml.safe_dump(data))
    parse_config((etc / "hubmirror.yaml").read_text())
    env.seed()
    env.hub.set_limit(100, remaining=12)
    run_env = {**env.cli_env(), "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
    spec = _cronjob()["spec"]["jobTemplate"]["spec"]

    deferred = subprocess.run(_container_argv(mounts), env=run_env, capture_output=True, text=True, timeout=120)
    assert deferred.returncode == 0 and "exit 75" in " ".join(deferred.stderr.split()), deferred.stderr
    assert "hubmirror_last_run_exit_code 75.0" in (var / "metrics" / "hubmirror.prom").read_text()
    assert job_after(spec, "sync", [deferred.returncode]) == "Complete"

    data["images"] = ["pyish", "nosuchimage"]
    (etc / "hubmirror.yaml").write_text(yaml.safe_dump(data))
    env.hub.refill()
    failed = subprocess.run(_container_argv(mounts), env=run_env, capture_output=True, text=True, timeout=120)
    assert failed.returncode == 1, failed.stderr
    assert job_after(spec, "sync", [failed.returncode]) == "Failed"
