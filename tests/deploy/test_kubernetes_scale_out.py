"""The Kubernetes scale-out shape (deploy/kubernetes/scale-out/): N `hubmirror sync` workers as an Indexed Job
from a CronJob, two `hubmirror serve` replicas, the state on PostgreSQL (a trial StatefulSet as a kustomize
component, or your own server).

Rendered by kustomize and validated with `kubernetes-validate --strict` (with and without the trial
PostgreSQL, on the default Kubernetes version and on 1.33, the first where backoffLimitPerIndex is stable);
the Indexed Job's fields and its failure rules evaluated (k8s_support); no password in a ConfigMap; and the
pods run the way the cluster runs them: their command and arguments, the image's environment, the Secrets'
variables, the ConfigMap's config with the in-cluster PostgreSQL's address replaced by the test server's,
against the Hub emulator and a real registry: three worker pods in parallel share one run and all complete;
two serve replicas answer their probes and the status API, and stop on SIGTERM.
"""

from __future__ import annotations

import json
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_support import DEPLOY, emulated_config, without_docker_credentials
from k8s_support import Doc, indexed_job_after, kustomization, pod_specs, render
from test_sync_support import Env
from test_workers import REPOS, assert_every_tag_right, hold_until_joined, repos_library

from hubmirror.config import parse_config
from hubmirror.state import State, redact_dsn
from hubmirror.testing.postgres import PostgresServer
from hubmirror.testing.registry import free_port

K8S = DEPLOY / "kubernetes"
SCALE = K8S / "scale-out"
N = 3  # the shipped number of workers
MOUNTED = ("/etc/hubmirror", "/var/lib/hubmirror")


# -- the manifests -----------------------------------------------------------------------------------------


def _external(tmp: Path) -> Path:
    """A copy of the scale-out directory without the trial PostgreSQL (your own server)."""
    d = tmp / "scale-out"
    shutil.copytree(SCALE, d)
    k = kustomization(d)
    del k["components"]
    (d / "kustomization.yaml").write_text(yaml.safe_dump(k))
    return d


def _docs() -> list[Doc]:
    return render(SCALE)


def _one(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    (doc,) = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    return doc


def _config(docs: list[Doc]) -> str:
    text: str = _one(docs, "ConfigMap", "hubmirror-config")["data"]["hubmirror.yaml"]
    return text


def _job(docs: list[Doc]) -> Doc:
    spec: Doc = _one(docs, "CronJob")["spec"]["jobTemplate"]["spec"]
    return spec


def _container(doc: Doc) -> Doc:
    (pod,) = pod_specs(doc)
    (c,) = pod["containers"]
    return c


def _validate(path: Path, *version: str) -> None:
    tool = shutil.which("kubernetes-validate", path=str(Path(sys.executable).parent)) or shutil.which(
        "kubernetes-validate"
    )
    assert tool is not None, "kubernetes-validate is a dev dependency"
    argv = [tool, "--strict", *(["-k", version[0]] if version else []), str(path)]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 0 and "failed" not in p.stdout and "ERROR" not in p.stdout, p.stdout + p.stderr


@pytest.mark.parametrize("postgres_from", ["trial-statefulset", "your-own"])
@pytest.mark.parametrize("version", [None, "1.33.0"])
def test_the_scale_out_shape_renders_and_passes_strict_validation(
    postgres_from: str, version: str | None, tmp_path: Path
) -> None:
    directory = SCALE if postgres_from == "trial-statefulset" else _external(tmp_path)
    docs = render(directory)
    out = tmp_path / "rendered.yaml"
    out.write_text(yaml.safe_dump_all(docs))
    _validate(out, *([version] if version else []))

    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in docs)
    trial = [("Service", "hubmirror-postgres"), ("StatefulSet", "hubmirror-postgres")]
    assert kinds == sorted(
        [
            ("ConfigMap", "hubmirror-config"),
            ("CronJob", "hubmirror-sync"),
            ("Deployment", "hubmirror"),
            ("PodDisruptionBudget", "hubmirror"),
            ("Service", "hubmirror"),
            *(trial if postgres_from == "trial-statefulset" else []),
        ]
    )  # no Secret: created with kubectl, never committed
    # hubmirror's image comes from the kustomization, the same as the single-process shape's.
    (rule,) = kustomization(SCALE)["images"]
    assert kustomization(SCALE)["images"] == kustomization(K8S)["images"]
    ours = [_container(d)["image"] for d in docs if d["kind"] in ("CronJob", "Deployment")]
    assert ours == [f"{rule['newName']}:{rule['newTag']}"] * 2
    if postgres_from == "trial-statefulset":
        assert _container(_one(docs, "StatefulSet"))["image"].startswith("postgres:")  # the official image


def test_the_workers_are_an_indexed_job_of_n_pods_with_the_single_cronjobs_wrapper() -> None:
    docs = _docs()
    cron = _one(docs, "CronJob")
    job = _job(docs)
    assert job["completionMode"] == "Indexed"
    assert job["completions"] == job["parallelism"] == N  # N pods at once: they start one run together
    assert job["backoffLimitPerIndex"] == 0 and "maxFailedIndexes" not in job and "backoffLimit" not in job
    assert cron["spec"]["concurrencyPolicy"] == "Forbid" and cron["spec"]["schedule"]
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["securityContext"]["runAsNonRoot"] is True
    # The same wrapper as the single-process CronJob (75 → 0, signals passed on), word for word.
    (single,) = [d for d in yaml.safe_load_all((K8S / "cronjob.yaml").read_text()) if d and d["kind"] == "CronJob"]
    sync = _container(cron)
    assert sync["command"] == _container(single)["command"]
    assert sync["args"][:3] == ["sync", "--config", "/etc/hubmirror/hubmirror.yaml"]
    # Nothing but scratch space: the state is in PostgreSQL, each pod has its own library clone.
    assert all("persistentVolumeClaim" not in v for v in pod["volumes"])
    assert {v["name"] for v in pod["volumes"] if "emptyDir" in v} >= {
        m["name"] for m in sync["volumeMounts"] if m["mountPath"] == "/var/lib/hubmirror"
    }


def _fake_hubmirror(bin_dir: Path, code: int) -> None:
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "hubmirror").write_text(f"#!/bin/sh\nexit {code}\n")
    (bin_dir / "hubmirror").chmod(0o755)


def _pod_exit(tmp: Path, hubmirror_exit: int) -> int:
    """The worker container's exit code when hubmirror exits *hubmirror_exit* (its wrapper, for real)."""
    bin_dir = tmp / f"bin-{hubmirror_exit}"
    _fake_hubmirror(bin_dir, hubmirror_exit)
    c = _container(_one(_docs(), "CronJob"))
    p = subprocess.run(
        [*c["command"], *c["args"]], env={"PATH": f"{bin_dir}:/usr/bin:/bin"}, capture_output=True, timeout=30
    )
    return p.returncode


def test_a_failed_worker_fails_its_index_only_and_the_job_at_the_end_without_a_retry(tmp_path: Path) -> None:
    job = _job(_docs())
    name = _container(_one(_docs(), "CronJob"))["name"]
    done, deferred, failed, usage = (_pod_exit(tmp_path, code) for code in (0, 75, 1, 2))
    assert (done, deferred, failed, usage) == (0, 0, 1, 2)

    # Every worker done, or every worker deferred by the pull budget (all exit 75): the Job completes.
    assert indexed_job_after(job, name, {i: [done] for i in range(N)})[0] == "Complete"
    assert indexed_job_after(job, name, {i: [deferred] for i in range(N)})[0] == "Complete"
    # One worker fails: its index fails, the others are not stopped and finish the run; the Job fails.
    for code in (failed, usage, 137):
        state, fate = indexed_job_after(job, name, {0: [code, 0, 0], 1: [done], 2: [done]})
        assert state == "Failed" and fate == {0: "Failed", 1: "Succeeded", 2: "Succeeded"}, code
    # No exit code is retried before the next schedule (a replacement would start a run of its own).
    for code in range(1, 256):
        assert indexed_job_after(job, name, {0: [code, 0], 1: [done], 2: [done]})[1][0] == "Failed", code
    # A disrupted pod (evicted, preempted, drained: SIGKILL after the grace period) is replaced; it completes.
    disrupted = {0: frozenset({"DisruptionTarget"})}
    assert indexed_job_after(job, name, {0: [137, 0], 1: [done], 2: [done]}, disrupted)[0] == "Complete"


def test_no_password_in_a_configmap_the_pods_read_it_from_the_secret_the_trial_postgresql_sets() -> None:
    docs = _docs()
    for cm in (d for d in docs if d["kind"] == "ConfigMap"):
        for key, text in cm["data"].items():
            cfg = parse_config(text, name=key)
            where = str(cfg.state)
            assert where.startswith("postgresql://") and redact_dsn(where) == where  # no password in the URL
            assert "PGPASSWORD=" not in text and "password=" not in where.lower()
    for d in docs:
        for pod in pod_specs(d):
            for c in pod["containers"]:
                for e in c.get("env", []):  # a password only ever from a Secret
                    assert "PASSWORD" not in e["name"] or "secretKeyRef" in e.get("valueFrom", {}), (c["name"], e)

    # The workers and the replicas take the Secret hubmirror-postgres whole: PGPASSWORD reaches libpq.
    for kind in ("CronJob", "Deployment"):
        refs = [f["secretRef"] for f in _container(_one(docs, kind)).get("envFrom", [])]
        assert {"name": "hubmirror-postgres"} in refs, (kind, refs)  # required: no state without it
    # The trial server's password is that Secret's PGPASSWORD, its user and database the state URL's.
    postgres = _container(_one(docs, "StatefulSet"))
    env = {e["name"]: e for e in postgres["env"]}
    assert env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "hubmirror-postgres", "key": "PGPASSWORD"}
    url = str(parse_config(_config(docs)).state)
    service = _one(docs, "Service", "hubmirror-postgres")
    (port,) = service["spec"]["ports"]
    expected = f"postgresql://{env['POSTGRES_USER']['value']}@hubmirror-postgres:{port['port']}/"
    assert url == expected + env["POSTGRES_DB"]["value"]
    assert service["spec"]["selector"] == _one(docs, "StatefulSet")["spec"]["template"]["metadata"]["labels"]
    # The example Secret names the key the pods read; it is not part of the kustomization.
    example = {d["metadata"]["name"]: d for d in yaml.safe_load_all((SCALE / "secret.example.yaml").read_text())}
    assert set(example["hubmirror-postgres"]["stringData"]) == {"PGPASSWORD"}
    assert "secret.example.yaml" not in kustomization(SCALE)["resources"]


def test_only_the_cronjob_schedules_and_the_service_reaches_the_serve_replicas_only() -> None:
    docs = _docs()
    cfg = parse_config(_config(docs))
    # The CronJob's pods start after the time; serve replicas scheduling too would start runs of their own
    # ahead of them. So the shared config has no schedule: the replicas run only what is triggered.
    assert _one(docs, "CronJob")["spec"]["schedule"] and not cfg.schedule and cfg.dest
    deployment = _one(docs, "Deployment")["spec"]
    assert deployment["replicas"] == 2
    assert deployment["strategy"]["rollingUpdate"]["maxUnavailable"] == 0  # never none answering
    serve = _container(_one(docs, "Deployment"))
    assert serve["args"][0] == "serve" and serve["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert serve["readinessProbe"]["httpGet"]["path"] == "/readyz"
    pdb = _one(docs, "PodDisruptionBudget")["spec"]
    assert 0 < pdb["minAvailable"] < deployment["replicas"]  # a drain goes on, one replica at a time
    serve_labels = deployment["template"]["metadata"]["labels"]
    worker_labels = _job(docs)["template"]["metadata"]["labels"]
    service = _one(docs, "Service", "hubmirror")["spec"]
    for selector in (service["selector"], pdb["selector"]["matchLabels"], deployment["selector"]["matchLabels"]):
        assert selector.items() <= serve_labels.items()
        assert not selector.items() <= worker_labels.items()  # a worker pod never gets the Service's traffic
    assert service["ports"][0]["targetPort"] == serve["ports"][0]["name"]
    # The single-process kustomization never pulls the scale-out shape in (two states, one destination).
    assert not any("scale-out" in r for r in kustomization(K8S)["resources"])


# -- running the pods --------------------------------------------------------------------------------------


def _image_env() -> dict[str, str]:
    """The ENV of deploy/Dockerfile's final stage: what every container starts with."""
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    final = text[text.rindex("\nFROM ") :]
    env: dict[str, str] = {}
    for line in final.splitlines():
        if line.startswith("ENV "):
            env.update(kv.split("=", 1) for kv in shlex.split(line[4:]))
    return env


class Pod:
    """One pod of the manifests as the kubelet starts it: its container's argv and environment (the image's
    ENV, then envFrom, then env, Secrets given by the test), its volumes directories under *root*."""

    def __init__(self, container: Doc, root: Path, etc: Path, secrets: dict[str, dict[str, str]]) -> None:
        self.container = container
        self.root = root
        self.mounts = {"/etc/hubmirror": etc, "/var/lib/hubmirror": root / "var-lib-hubmirror"}
        for path in self.mounts.values():
            path.mkdir(parents=True, exist_ok=True)
        writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
        env = {"PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin", "HOME": str(root / "home")}
        for key, value in _image_env().items():
            if value.startswith("/"):  # the image writes there: a volume, since the root filesystem is read-only
                assert any(value == w or value.startswith(w + "/") for w in writable), (key, value)
            env[key] = self._local(value)
        for source in container.get("envFrom", []):
            ref = source["secretRef"]
            if ref["name"] not in secrets:
                assert ref.get("optional"), f"the pod would not start without the Secret {ref['name']}"
                continue
            env.update(secrets[ref["name"]])
        for e in container.get("env", []):
            if "value" in e:
                env[e["name"]] = self._local(e["value"])
            else:
                ref = e["valueFrom"]["secretKeyRef"]
                env[e["name"]] = secrets[ref["name"]][ref["key"]]
        self.env = env

    def _local(self, text: str) -> str:
        for src, dst in self.mounts.items():
            text = text.replace(src, str(dst))
        return text

    def argv(self, *, listen: str | None = None) -> list[str]:
        argv = [self._local(a) for a in [*self.container.get("command", ["hubmirror"]), *self.container["args"]]]
        if listen is not None:
            argv[argv.index("--listen") + 1] = listen
        return argv


def _cluster_config(env: Env, postgres: PostgresServer, database: str, docs: list[Doc]) -> str:
    """The ConfigMap's config, with the cluster's PostgreSQL (the Service hubmirror-postgres) replaced by the
    test server and the Hub, library and destination by the emulator's."""
    return emulated_config(_config(docs), env, postgres, database, [f"r{r}" for r in range(1, REPOS + 1)])


def _start_workers(env: Env, docs: list[Doc], etc: Path, secrets: dict[str, dict[str, str]], wave: str) -> list[Any]:
    cron = _one(docs, "CronJob")
    out = []
    for index in range(_job(docs)["completions"]):
        pod = Pod(_container(cron), env.root / f"{wave}-worker-{index}", etc, secrets)
        # JOB_COMPLETION_INDEX as the Job controller sets it
        pod_env = {**pod.env, "JOB_COMPLETION_INDEX": str(index), **without_docker_credentials(env)}
        out.append(subprocess.Popen(pod.argv(), env=pod_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return out


def test_n_worker_pods_share_one_run_against_postgresql_and_complete(env: Env, postgres: PostgresServer) -> None:
    docs = _docs()
    job = _job(docs)
    name = _container(_one(docs, "CronJob"))["name"]
    url = postgres.new_database()
    database = url.rsplit("/", 1)[1]
    etc = env.root / "etc-hubmirror"
    etc.mkdir()
    (etc / "hubmirror.yaml").write_text(_cluster_config(env, postgres, database, docs))
    secrets = {"hubmirror-postgres": {"PGPASSWORD": postgres.password}}  # `hubmirror` (optional) not created
    env.commit(repos_library())
    env.seed()

    # First, 25 pulls left (10 kept in reserve by the config) for 60 manifests: every worker defers (75).
    env.hub.set_limit(100, remaining=25)
    env.hub.set_delay(3600)  # the copies wait until the N pods have joined the run (a busy machine)
    pods = _start_workers(env, docs, etc, secrets, "deferred")
    hold_until_joined(env, url, N, then=0.05, timeout=180)
    outs = [p.communicate(timeout=300) for p in pods]
    codes = [p.returncode for p in pods]
    assert codes == [0] * N, outs
    assert all("exit 75" in " ".join(err.split()) for _, err in outs), outs
    assert indexed_job_after(job, name, {i: [c] for i, c in enumerate(codes)})[0] == "Complete"

    # The next schedule, the quota refilled: the N pods finish the job in one more run.
    env.hub.refill()
    env.hub.set_delay(3600)
    pods = _start_workers(env, docs, etc, secrets, "done")
    hold_until_joined(env, url, N, then=0.05, timeout=180)
    outs += [p.communicate(timeout=300) for p in pods]
    codes = [p.returncode for p in pods]
    assert codes == [0] * N, outs
    assert indexed_job_after(job, name, {i: [c] for i, c in enumerate(codes)})[0] == "Complete"
    assert_every_tag_right(env)
    with State.open(url) as st:
        runs = st.runs()
        assert [r.status for r in runs] == ["completed", "deferred"]  # one run per schedule, newest first
        for run in runs:
            workers, _ = st.run_work(run.id)
            assert len(workers) == N, workers
    assert all(postgres.password not in out + err for out, err in outs)


def _get(url: str, timeout: float = 10) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


@contextmanager
def _replicas(
    env: Env, docs: list[Doc], etc: Path, secrets: dict[str, dict[str, str]]
) -> Iterator[list[tuple[subprocess.Popen[str], str]]]:
    deployment = _one(docs, "Deployment")
    started: list[tuple[subprocess.Popen[str], str]] = []
    try:
        for i in range(deployment["spec"]["replicas"]):
            pod = Pod(_container(deployment), env.root / f"replica-{i}", etc, secrets)
            port = free_port()
            log = (env.root / f"replica-{i}.log").open("w")
            p = subprocess.Popen(
                pod.argv(listen=f"127.0.0.1:{port}"),
                env={**pod.env, **without_docker_credentials(env)},
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
            )
            started.append((p, f"http://127.0.0.1:{port}"))
        yield started
    finally:
        for p, _ in started:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)


def test_two_serve_replicas_on_the_postgresql_state_answer_probes_and_the_api_and_stop_on_sigterm(
    env: Env, postgres: PostgresServer
) -> None:
    docs = _docs()
    url = postgres.new_database()
    etc = env.root / "etc-hubmirror"
    etc.mkdir()
    (etc / "hubmirror.yaml").write_text(_cluster_config(env, postgres, url.rsplit("/", 1)[1], docs))
    secrets = {"hubmirror-postgres": {"PGPASSWORD": postgres.password}}
    env.commit(repos_library())
    env.seed()
    serve = _container(_one(docs, "Deployment"))
    probes = {kind: serve[kind]["httpGet"]["path"] for kind in ("livenessProbe", "readinessProbe")}

    with _replicas(env, docs, etc, secrets) as replicas:
        for p, base in replicas:  # every replica: alive, then ready (the state read), then the status API
            deadline = time.monotonic() + 120
            while _get(base + probes["readinessProbe"])[0] != 200:
                assert p.poll() is None and time.monotonic() < deadline, (env.root / "replica-0.log").read_text()
                time.sleep(0.2)
            assert _get(base + probes["livenessProbe"])[0] == 200
            code, body = _get(base + "/api/status")
            assert code == 200 and json.loads(body)["schedule"] is None  # the CronJob schedules
        for p, _ in replicas:
            p.send_signal(signal.SIGTERM)
        codes = [p.wait(timeout=180) for p, _ in replicas]
    logs = [(env.root / f"replica-{i}.log").read_text() for i in range(len(replicas))]
    assert codes == [0] * len(replicas), logs
    assert all(postgres.password not in log for log in logs)


def test_your_own_postgresqls_whole_address_can_live_in_the_secret(env: Env, postgres: PostgresServer) -> None:
    """secret.example.yaml: with `state: postgresql://`, libpq takes the host, port, user and database from
    the Secret's PGHOST, PGPORT, PGUSER and PGDATABASE, as it takes the password from PGPASSWORD."""
    docs = _docs()
    url = postgres.new_database()
    etc = env.root / "etc-hubmirror"
    etc.mkdir()
    data = yaml.safe_load(_cluster_config(env, postgres, url.rsplit("/", 1)[1], docs))
    data["state"] = "postgresql://"
    (etc / "hubmirror.yaml").write_text(yaml.safe_dump(data))
    user = url.removeprefix("postgresql://").split(":", 1)[0]
    secret = {"PGHOST": postgres.host, "PGPORT": str(postgres.port), "PGUSER": user, "PGPASSWORD": postgres.password}
    secret["PGDATABASE"] = url.rsplit("/", 1)[1]
    env.commit(repos_library())
    env.seed()
    pod = Pod(_container(_one(docs, "CronJob")), env.root / "worker", etc, {"hubmirror-postgres": secret})
    pod_env = {**pod.env, "JOB_COMPLETION_INDEX": "0", **without_docker_credentials(env)}
    p = subprocess.run(pod.argv(), env=pod_env, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    assert_every_tag_right(env)
    with State.open(url) as st:
        assert [r.status for r in st.runs()] == ["completed"]
    assert postgres.password not in p.stdout + p.stderr
