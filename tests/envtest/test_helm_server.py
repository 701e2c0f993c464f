"""The chart against the real API server: ``helm template`` output passes
``--dry-run=server --validate=strict`` (default and custom values), ``helm
install`` installs, and ``helm uninstall`` removes the release but keeps the
CRDs (``helm.sh/resource-policy: keep``) and with them every MailDomain."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from envkit import crd_established, wait_for

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "correo"
CRDS = ("maildomains.correo.dev", "mailboxes.correo.dev")


class Helm:
    def __init__(self, binary: str, kubeconfig: Path) -> None:
        self.binary, self.kubeconfig = binary, kubeconfig

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run([self.binary, f"--kubeconfig={self.kubeconfig}", *args], capture_output=True,
                              text=True, timeout=300)
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
