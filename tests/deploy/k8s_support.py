"""Kubernetes manifests as a cluster gets them, and the Job controller's rules, for the deployment tests.

`render` is what `kubectl apply -k DIRECTORY` sends: kustomize's output where kubectl is installed, else the
tests' own transform (resources, components, `images:`). `job_after` and `indexed_job_after` evaluate a
Job's documented podFailurePolicy, backoffLimit and backoffLimitPerIndex rules on the exit codes of its pods.

Kubernetes' rules (batch/v1 Job, "Pod failure policy" and "Backoff limit per index", stable since 1.31 and
1.33): a pod whose container exits 0 succeeds (its index, in an Indexed Job, is complete). A failed pod is
matched against the rules in order, the first match wins: FailJob fails the Job; FailIndex fails the pod's
index (only with backoffLimitPerIndex); Ignore creates a replacement pod without counting the failure; Count
(and no match) counts it: against backoffLimit (the Job fails once the failures counted exceed it), and with
backoffLimitPerIndex against the index's own limit (the index fails once its failures exceed it). An Indexed
Job with backoffLimitPerIndex whose indexes have all finished is Complete when every index succeeded, else
Failed; with maxFailedIndexes it fails as soon as more indexes than that have failed. In onExitCodes,
containers that exited 0 are left out; In matches a code in `values`, NotIn a code outside them.
onPodConditions matches a pod condition of that type (status True unless given).
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

Doc = dict[str, Any]


# -- rendering ---------------------------------------------------------------------------------------------


def apply_images(docs: list[Doc], images: list[dict[str, str]]) -> list[Doc]:
    """kustomize's `images:` transform: a container image named `name` (with any tag) gets newName/newTag."""
    out = copy.deepcopy(docs)
    for doc in out:
        for pod in pod_specs(doc):
            for c in pod.get("containers", []) + pod.get("initContainers", []):
                name = c["image"].split("@")[0]
                name = name.rsplit(":", 1)[0] if ":" in name.rsplit("/", 1)[-1] else name
                for rule in images:
                    if rule["name"] == name:
                        c["image"] = rule.get("newName", name) + (f":{rule['newTag']}" if "newTag" in rule else "")
    return out


def pod_specs(doc: Doc) -> list[Doc]:
    spec = doc.get("spec") or {}
    if doc["kind"] == "CronJob":
        return [spec["jobTemplate"]["spec"]["template"]["spec"]]
    if doc["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
        return [spec["template"]["spec"]]
    return []


def kustomization(directory: Path) -> Doc:
    data: Doc = yaml.safe_load((directory / "kustomization.yaml").read_text())
    return data


def _own_render(directory: Path) -> list[Doc]:
    """The resources of *directory*'s kustomization and of its components (files or kustomization
    directories), with its `images:` applied."""
    k = kustomization(directory)
    docs: list[Doc] = []
    for entry in [*k.get("resources", []), *k.get("components", [])]:
        path = directory / entry
        if path.is_dir():
            docs += _own_render(path)
        else:
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return apply_images(docs, k.get("images", []))


def render(directory: Path) -> list[Doc]:
    """What `kubectl apply -k DIRECTORY` sends: kustomize's output, or the test's transform without kubectl."""
    ours = _own_render(directory)
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return ours
    p = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=False)
    assert p.returncode == 0, p.stderr
    rendered = [d for d in yaml.safe_load_all(p.stdout) if d]
    images = sorted(c["image"] for d in rendered for pod in pod_specs(d) for c in pod["containers"])
    assert images == sorted(c["image"] for d in ours for pod in pod_specs(d) for c in pod["containers"])
    assert sorted((d["kind"], d["metadata"]["name"]) for d in rendered) == sorted(
        (d["kind"], d["metadata"]["name"]) for d in ours
    )
    return rendered


# -- the Job controller's rules ---------------------------------------------------------------------------


def _matches(rule: Doc, container: str, code: int, conditions: frozenset[str]) -> bool:
    on_codes = rule.get("onExitCodes")
    if on_codes is not None:
        if code == 0 or on_codes.get("containerName") not in (None, container):
            return False
        return (code in on_codes["values"]) == (on_codes["operator"] == "In")
    return any(p["type"] in conditions and p.get("status", "True") == "True" for p in rule["onPodConditions"])


def _action(job: Doc, container: str, code: int, conditions: frozenset[str]) -> str:
    rules = (job.get("podFailurePolicy") or {}).get("rules", [])
    return next((r["action"] for r in rules if _matches(r, container, code, conditions)), "Count")


def job_after(job: Doc, container: str, codes: list[int], conditions: frozenset[str] = frozenset()) -> str:
    """The Job's fate after pods whose container exited with *codes* in turn: Complete, Failed, or Running
    (a replacement pod is due). The pods after the first get no conditions."""
    counted = 0
    for n, code in enumerate(codes):
        if code == 0:
            return "Complete"
        action = _action(job, container, code, conditions if n == 0 else frozenset())
        if action == "FailJob":
            return "Failed"
        assert action != "FailIndex", "FailIndex is for Indexed Jobs with backoffLimitPerIndex"
        if action == "Count":
            counted += 1
            if counted > job.get("backoffLimit", 6):
                return "Failed"
    return "Running"


def indexed_job_after(
    job: Doc, container: str, pods: dict[int, list[int]], conditions: dict[int, frozenset[str]] | None = None
) -> tuple[str, dict[int, str]]:
    """An Indexed Job's fate after, for each index, pods whose container exited with the codes given in turn
    (*conditions*: those of each index's first pod): the Job's state (Complete, Failed, Running) and each
    index's (Succeeded, Failed, Running). The indexes are followed one after the other (the Job controller
    sees them in parallel): a FailJob or the maxFailedIndexes limit ends the Job, whatever the others do."""
    assert job["completionMode"] == "Indexed" and sorted(pods) == list(range(job["completions"]))
    per_index = job.get("backoffLimitPerIndex")
    limit = job.get("backoffLimit", 2**31 - 1 if per_index is not None else 6)
    counted_total = 0
    fate: dict[int, str] = {}
    for index, codes in sorted(pods.items()):
        fate[index] = "Running"
        counted = 0
        for n, code in enumerate(codes):
            if code == 0:
                fate[index] = "Succeeded"
                break
            first = (conditions or {}).get(index, frozenset()) if n == 0 else frozenset()
            action = _action(job, container, code, first)
            if action == "FailJob":
                return "Failed", fate
            if action == "FailIndex":
                assert per_index is not None, "FailIndex needs backoffLimitPerIndex"
                fate[index] = "Failed"
                break
            if action == "Count":
                counted, counted_total = counted + 1, counted_total + 1
                if counted_total > limit:
                    return "Failed", fate
                if per_index is not None and counted > per_index:
                    fate[index] = "Failed"
                    break
        failed = sum(1 for f in fate.values() if f == "Failed")
        if job.get("maxFailedIndexes") is not None and failed > job["maxFailedIndexes"]:
            return "Failed", fate  # the pods of the other indexes are terminated
    if "Running" in fate.values():
        return "Running", fate
    return ("Failed" if "Failed" in fate.values() else "Complete"), fate
