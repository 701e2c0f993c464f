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

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "helm"))

from controlplane import HOW_TO_GET, ControlPlane, StartError, die_with_parent, find_assets  # noqa: E402
from envkit import KUBECTL_HOW_TO_GET, Kubectl, crd_established, find_kubectl, unavailable, wait_for  # noqa: E402
from helm_binary import HOW_TO_GET as HELM_HOW_TO_GET, find_helm  # noqa: E402

ROOT = HERE.parents[1]


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
        # (Not `kubectl wait`: it errors out while a new CRD has no conditions yet.)
        wait_for(lambda: all(crd_established(cp, name) for name in ("maildomains.correo.dev",
                                                                     "mailboxes.correo.dev")),
                 what="the CRDs Established")
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


# ---------------------------------------------------------------------------
# A node to run pods on, and the operator as the chart deploys it
# ---------------------------------------------------------------------------

OPERATOR_NAMESPACE = "correo-system"
CHART = ROOT / "helm" / "correo"


@pytest.fixture(scope="session")
def node(control_plane, tmp_path_factory):
    """The kubelet-less node (``node.py``), its pods reaching this API server."""
    from node import Node, NodeUnavailable
    try:
        n = Node(tmp_path_factory.mktemp("node"), api_port=control_plane.port).start()
    except NodeUnavailable as exc:
        unavailable(str(exc))
    try:
        yield n
    finally:
        n.stop()


class Operator:
    """``correo operator`` as the chart's Deployment runs it: its ServiceAccount, RBAC and pod
    (args, env, security context) from ``helm template``, watching the test's namespace, run on
    the node with that ServiceAccount's token (not as admin)."""

    def __init__(self, cp: ControlPlane, kubectl: Kubectl, helm: str, node, namespace: str, workdir: Path) -> None:
        self.cp, self.kubectl, self.helm, self.node = cp, kubectl, helm, node
        self.namespace = namespace
        self.workdir = workdir
        self.pod_name = f"operator-{namespace}"[:63]
        self.pod: dict | None = None
        self.user = ""
        self.cluster_rbac: list[dict] = []

    def render(self, *sets: str, every_namespace: bool = False) -> list[dict]:
        args = [self.helm, "template", "correo", str(CHART), "--namespace", OPERATOR_NAMESPACE,
                "--set", "crds.enabled=false", "--set", "statusInterval=2", "--set", "metrics.service.enabled=false"]
        if not every_namespace:
            args += ["--set", f"watchNamespaces[0]={self.namespace}"]
        for s in sets:
            args += ["--set", s]
        done = subprocess.run(args, capture_output=True, text=True, timeout=120, preexec_fn=die_with_parent())
        assert done.returncode == 0, done.stderr
        return [d for d in yaml.safe_load_all(done.stdout) if d]

    def start(self, *sets: str, every_namespace: bool = False) -> "Operator":
        """Run it as the chart deploys it: for the test's namespace (``watchNamespaces``, a
        Role there), or, as the chart's default, for every namespace (ClusterRoles, removed
        again by :meth:`stop` so that no later test's operator has their permissions)."""
        from node import materialise, pod_of
        objects = self.render(*sets, every_namespace=every_namespace)
        kinds = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding"} if every_namespace else \
            {"ServiceAccount", "Role", "RoleBinding"}
        rbac = [o for o in objects if o["kind"] in kinds | {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}]
        assert {o["kind"] for o in rbac} == kinds
        self.cp.request("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                       "metadata": {"name": OPERATOR_NAMESPACE}})
        self.kubectl.run("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(rbac))
        self.cluster_rbac = [o for o in rbac if o["kind"].startswith("Cluster")]
        (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
        _, pod = pod_of(deployment)
        sa = pod["spec"]["serviceAccountName"]
        self.user = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{sa}"
        ca = (self.cp.dir / "certs" / "apiserver.crt").read_bytes()
        mounts = materialise(pod, self.workdir / self.pod_name, lambda kind, name: None,
                             claims=self.workdir / "claims", token=lambda: self.cp.token_for(OPERATOR_NAMESPACE, sa),
                             ca=ca, fs_group=(pod["spec"].get("securityContext") or {}).get("fsGroup"))
        self.node.run_pod(self.pod_name, pod, mounts)
        self.pod = pod
        wait_for(lambda: self.node.probe(self.pod_name)[0] == 200, timeout=60,
                 what=lambda: f"the operator ready ({self.node.pod_state(self.pod_name)})\n{self.log()[-3000:]}")
        return self

    def stop(self) -> None:
        if self.pod is not None:
            self.node.stop_pod(self.pod_name)
            self.pod = None
        if self.cluster_rbac:
            self.kubectl.run("delete", "--ignore-not-found", "-f", "-", input=yaml.safe_dump_all(self.cluster_rbac))
            self.cluster_rbac = []

    def log(self) -> str:
        return self.node.pod_log(self.pod_name)

    def status(self) -> dict:
        import json
        import urllib.request
        port = self.node.forward(8080)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=10) as rsp:
            return json.loads(rsp.read())

    def passes(self) -> int:
        return int(self.status()["passes"])

    def wait_passes(self, n: int, timeout: float = 60) -> None:
        """Until the operator has made ``n`` more reconcile passes (its resync timer)."""
        start = self.passes()
        wait_for(lambda: self.passes() >= start + n, timeout=timeout, what=f"{n} more reconcile passes")

    def writes(self) -> list[dict]:
        return self.cp.audit_events(self.user, writes_only=True)

    def forbidden(self) -> list[str]:
        """Requests RBAC refused (not writes into a namespace being deleted, which the server
        refuses whoever asks: an operator serving every namespace meets earlier tests' ones)."""
        return [f"{e['verb']} {e['requestURI']}: {e['responseStatus'].get('message', '')}"
                for e in self.cp.audit_events(self.user)
                if e.get("responseStatus", {}).get("code") == 403
                and "because it is being terminated" not in e["responseStatus"].get("message", "")]


@pytest.fixture
def operator(control_plane, kubectl, helm_binary, node, namespace, tmp_path):
    """The operator for the test's namespace (call ``.start()``); stopped afterwards, and
    checked never to have been refused by RBAC."""
    op = Operator(control_plane, kubectl, helm_binary, node, namespace, tmp_path)
    try:
        yield op
    finally:
        op.stop()
    assert op.forbidden() == [], f"the operator needed permissions the chart does not grant:\n{op.log()[-3000:]}"
