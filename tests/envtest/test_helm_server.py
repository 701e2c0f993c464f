"""The chart against the real API server: ``helm template`` output passes
``--dry-run=server --validate=strict`` (default and custom values), ``helm
install`` installs, and ``helm uninstall`` removes the release but keeps the
CRDs (``helm.sh/resource-policy: keep``) and with them every MailDomain.

The RBAC it installs is checked by the server's own authorizer
(SubjectAccessReview): what the operator needs is allowed, in the namespaces it
serves only, and nothing more (no CRD writes, no pods, no RBAC, no nodes).

``helm upgrade`` from the previous chart (``charts/correo-0.1.0-66967f8.tgz``:
``helm package`` of the chart at commit 66967f8, the first whose CRDs a real
API server accepts) changes the CRDs in place: objects stored under the old
schema stay, read back with the new defaults, and take the new fields."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from controlplane import die_with_parent
from envkit import can, crd_established, granted, service_account_user, wait_for

from correo_operator import kopfapp
from correo_operator.kube import PERMISSIONS

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "correo"
CRDS = ("maildomains.correo.dev", "mailboxes.correo.dev")
PREVIOUS_CHART = Path(__file__).resolve().parent / "charts" / "correo-0.1.0-66967f8.tgz"


class Helm:
    def __init__(self, binary: str, kubeconfig: Path) -> None:
        self.binary, self.kubeconfig = binary, kubeconfig

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run([self.binary, f"--kubeconfig={self.kubeconfig}", *args], capture_output=True,
                              text=True, timeout=300, preexec_fn=die_with_parent())
        if check and done.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done


@pytest.fixture(scope="module")
def helm(helm_binary, control_plane) -> Helm:
    return Helm(helm_binary, control_plane.kubeconfig)


@pytest.mark.parametrize("values", [
    [],
    ["watchNamespaces={mail-a,mail-b}", "crds.enabled=false", "networkPolicy.enabled=true",
     "serviceAccount.name=correo-op", "imagePullSecrets[0].name=registry-creds"],
], ids=["default", "namespaced"])
def test_the_templated_chart_passes_strict_server_validation(helm, kubectl, control_plane, values):
    args = ["template", "correo-dry", str(CHART), "--namespace", "correo-dry"]
    for v in values:
        args += ["--set", v]
    stream = helm.run(*args).stdout
    objects = [d for d in yaml.safe_load_all(stream) if d]
    for ns in {"correo-dry"} | {o["metadata"].get("namespace") for o in objects if o["metadata"].get("namespace")}:
        control_plane.request("POST", "/api/v1/namespaces",
                              {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    out = kubectl.run("apply", "--server-side", "--dry-run=server", "--validate=strict", "--force-conflicts",
                      "-f", "-", input=stream).stdout
    assert out.count("(server dry run)") == len(objects), out


def test_helm_install_installs_and_uninstall_keeps_the_crds(helm, kubectl, control_plane, namespace):
    release, ns = "correo-helm", "correo-helm"
    # A MailDomain that must outlive the release.
    kubectl.run("apply", "--server-side", "-n", namespace, "-f", "-", input=yaml.safe_dump(
        {"apiVersion": "correo.dev/v1alpha1", "kind": "MailDomain", "metadata": {"name": "keep-me"},
         "spec": {"domain": "keep.test"}}))
    # The session applied the CRDs with kubectl already (as a cluster admin might have):
    # the release takes them over rather than failing on them.
    done = helm.run("install", release, str(CHART), "--namespace", ns, "--create-namespace", "--take-ownership")
    assert "STATUS: deployed" in done.stdout
    assert "kubectl wait --for=condition=Ready maildomain/" in done.stdout  # NOTES
    status = json.loads(helm.run("status", release, "-n", ns, "-o", "json").stdout)
    assert status["info"]["status"] == "deployed"
    deploy = kubectl.json("get", "deployment", release, "-n", ns)
    assert deploy["spec"]["template"]["spec"]["serviceAccountName"] == release
    for name in (release, f"{release}-crds"):
        kubectl.json("get", "clusterrole", name)
        kubectl.json("get", "clusterrolebinding", name)
    # Least privilege, as the server's authorizer works it out from every binding: the
    # ServiceAccount may do exactly what the operator's code calls (kube.PERMISSIONS, kopf's
    # needs), beyond what any ServiceAccount of no role may do.
    control_plane.request("POST", f"/api/v1/namespaces/{ns}/serviceaccounts", {
        "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "no-role"}})
    baseline = granted(control_plane, control_plane.token_for(ns, "no-role"), namespace)
    mine = granted(control_plane, control_plane.token_for(ns, release), namespace) - baseline
    needed = {(g, r, v) for table in (PERMISSIONS, kopfapp.KOPF_PERMISSIONS, kopfapp.KOPF_CLUSTER_PERMISSIONS)
              for (g, r), verbs in table.items() for v in verbs}
    assert mine == needed, (f"granted, not called: {sorted(mine - needed)}; "
                            f"called, not granted: {sorted(needed - mine)}")
    # Serving every namespace: the real authorizer lets the ServiceAccount do its work anywhere,
    # and nothing beyond it.
    sa = service_account_user(ns, release)
    for verb, resource, group, sub in [("watch", "maildomains", "correo.dev", ""),
                                       ("patch", "maildomains", "correo.dev", "status"),
                                       ("patch", "mailboxes", "correo.dev", "status"),
                                       ("patch", "statefulsets", "apps", ""), ("create", "events", "", ""),
                                       ("delete", "persistentvolumeclaims", "", "")]:
        assert can(control_plane, sa, verb, resource, group=group, subresource=sub, namespace=namespace), \
            (verb, resource, sub)
    assert can(control_plane, sa, "watch", "customresourcedefinitions", group="apiextensions.k8s.io")
    for verb, resource, group, sub in [("update", "maildomains", "correo.dev", ""),
                                       ("delete", "maildomains", "correo.dev", ""),
                                       ("create", "mailboxes", "correo.dev", ""),
                                       ("patch", "mailboxes", "correo.dev", ""),
                                       ("get", "pods", "", ""), ("create", "pods", "", "exec"),
                                       ("create", "serviceaccounts", "", "token"),
                                       ("get", "persistentvolumeclaims", "", "")]:
        assert not can(control_plane, sa, verb, resource, group=group, subresource=sub, namespace=namespace), \
            (verb, resource, sub)
    for verb, resource, group in [("patch", "customresourcedefinitions", "apiextensions.k8s.io"),
                                  ("create", "clusterroles", "rbac.authorization.k8s.io"),
                                  ("create", "clusterrolebindings", "rbac.authorization.k8s.io"),
                                  ("get", "nodes", ""), ("list", "namespaces", "")]:
        assert not can(control_plane, sa, verb, resource, group=group), (verb, resource)
    for crd in CRDS:
        meta = kubectl.json("get", "crd", crd)["metadata"]
        assert meta["annotations"]["helm.sh/resource-policy"] == "keep"
        assert meta["annotations"]["meta.helm.sh/release-name"] == release

    done = helm.run("uninstall", release, "-n", ns)
    assert "kept due to the resource policy" in done.stdout + done.stderr
    wait_for(lambda: kubectl.run("get", "deployment", release, "-n", ns, check=False).returncode != 0,
             what="the release's Deployment removed")
    assert kubectl.run("get", "clusterrole", release, check=False).returncode != 0
    for crd in CRDS:
        assert crd_established(control_plane, crd), f"{crd} kept and still served"
    assert kubectl.json("get", "maildomain", "keep-me", "-n", namespace)["spec"]["domain"] == "keep.test"


def test_watching_some_namespaces_grants_nothing_elsewhere(helm, kubectl, control_plane, namespace):
    """``watchNamespaces``: a Role per namespace; the authorizer allows the operator's work
    there, and refuses it in any other namespace and cluster-wide."""
    release, ns = "correo-ns", "correo-ns"
    done = helm.run("template", release, str(CHART), "--namespace", ns, "--set", "crds.enabled=false",
                    "--set", f"watchNamespaces[0]={namespace}")
    rbac = [o for o in yaml.safe_load_all(done.stdout)
            if o and o["kind"] in ("ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")]
    assert {o["kind"] for o in rbac} == {"ServiceAccount", "Role", "RoleBinding"}
    control_plane.request("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                         "metadata": {"name": ns}})
    kubectl.run("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(rbac))
    sa = service_account_user(ns, release)
    try:
        assert can(control_plane, sa, "patch", "maildomains", group="correo.dev", subresource="status",
                   namespace=namespace)
        assert can(control_plane, sa, "patch", "deployments", group="apps", namespace=namespace)
        assert can(control_plane, sa, "get", "secrets", namespace=namespace)
        for other in ("default", "kube-system", ns):
            assert not can(control_plane, sa, "get", "secrets", namespace=other), other
            assert not can(control_plane, sa, "list", "maildomains", group="correo.dev", namespace=other), other
        assert not can(control_plane, sa, "list", "maildomains", group="correo.dev")  # all namespaces
        assert not can(control_plane, sa, "list", "customresourcedefinitions", group="apiextensions.k8s.io")
    finally:
        kubectl.run("delete", "-f", "-", "--ignore-not-found", input=yaml.safe_dump_all(rbac), check=False)


def schema_properties(kubectl, crd: str, *path: str) -> set[str]:
    node = kubectl.json("get", "crd", crd)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for key in path:
        node = node["properties"][key]
    return set(node.get("properties") or {})


def test_helm_upgrade_from_the_previous_chart_changes_the_crds_and_keeps_the_objects(
        helm, kubectl, control_plane, namespace):
    release, ns = "correo-upgrade", "correo-upgrade"
    try:
        # The previous release, over CRDs a user applied with `kubectl apply --server-side` (the
        # session's): kubectl's field manager owns them, and a chart whose CRDs differ conflicts
        # with it; the README says to add --force-conflicts to --take-ownership, and after that
        # the release owns them (upgrades need no flag).
        install = ["install", release, str(PREVIOUS_CHART), "--namespace", ns, "--create-namespace",
                   "--take-ownership"]
        refused = helm.run(*install, check=False)
        assert refused.returncode != 0 and 'conflict with "kubectl"' in refused.stderr, refused.stderr
        helm.run("uninstall", release, "-n", ns, check=False)
        helm.run(*install, "--force-conflicts")
        assert "recipientDelimiter" not in schema_properties(kubectl, "maildomains.correo.dev", "spec")
        assert "sieve" not in schema_properties(kubectl, "mailboxes.correo.dev", "spec")
        kubectl.run("apply", "--server-side", "-n", namespace, "-f", "-", input=yaml.safe_dump_all([
            {"apiVersion": "correo.dev/v1alpha1", "kind": "MailDomain", "metadata": {"name": "old"},
             "spec": {"domain": "old.test", "queue": {"retry": {"initialDelaySeconds": 120}}}},
            {"apiVersion": "correo.dev/v1alpha1", "kind": "Mailbox", "metadata": {"name": "ana"},
             "spec": {"address": "ana@old.test", "passwordSecretRef": {"name": "ana-password"}}}]))
        before = kubectl.json("get", "maildomain", "old", "-n", namespace)

        done = helm.run("upgrade", release, str(CHART), "--namespace", ns)
        assert "STATUS: deployed" in done.stdout
        assert "REVISION: 2" in done.stdout
        wait_for(lambda: all(crd_established(control_plane, crd) for crd in CRDS), what="the new CRDs served")
        assert {"recipientDelimiter", "catchAll"} <= schema_properties(kubectl, "maildomains.correo.dev", "spec")
        assert {"sieve", "autoReply"} <= schema_properties(kubectl, "mailboxes.correo.dev", "spec")
        for crd in CRDS:
            assert kubectl.json("get", "crd", crd)["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"

        # What was stored under the old schema is still there, read with the new defaults.
        after = kubectl.json("get", "maildomain", "old", "-n", namespace)
        assert after["metadata"]["uid"] == before["metadata"]["uid"]
        assert after["spec"]["queue"]["retry"]["initialDelaySeconds"] == 120
        assert after["spec"]["recipientDelimiter"] == "+"
        # Edits of old objects pass the new rules; the new fields are taken, and checked.
        kubectl.run("label", "maildomain", "old", "-n", namespace, "upgraded=yes")
        kubectl.run("patch", "maildomain", "old", "-n", namespace, "--type=merge",
                    "-p", '{"spec":{"catchAll":"ana@old.test"}}')
        refused = kubectl.run("patch", "maildomain", "old", "-n", namespace, "--type=merge",
                              "-p", '{"spec":{"catchAll":"ana@elsewhere.test"}}', check=False)
        assert refused.returncode != 0 and "catchAll must be an address of the domain" in refused.stderr
        kubectl.run("patch", "mailbox", "ana", "-n", namespace, "--type=merge",
                    "-p", '{"spec":{"autoReply":{"enabled":true,"subject":"Away","body":"Back soon."}}}')
        mailbox = kubectl.json("get", "mailbox", "ana", "-n", namespace)
        assert mailbox["spec"]["autoReply"]["subject"] == "Away"
    finally:
        helm.run("uninstall", release, "-n", ns, check=False)
        # Whatever happened above, the session goes on with the CRDs of this checkout.
        kubectl.run("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
        wait_for(lambda: all(crd_established(control_plane, crd) for crd in CRDS), what="the CRDs of crds/ served")
