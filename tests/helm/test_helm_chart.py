"""The Helm chart, with a real helm: lint, template with default and custom
values, every object strictly valid for Kubernetes 1.36, CRDs identical to
``crds/``, RBAC exactly what the operator calls, restricted pod security."""
from __future__ import annotations

import copy
import filecmp
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from chartkit import CHART, NAMESPACE, RELEASE, ROOT

from correo_operator import cli, kopfapp, loading, moves
from correo_operator.kube import PERMISSIONS

K8S_VERSION = "1.36.0"
# Kinds no schema exists for in kubernetes-validate: checked by hand below instead.
NO_SCHEMA = {("monitoring.coreos.com/v1", "ServiceMonitor")}


def by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def rules_as_set(rules: list[dict]) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}


def table_as_set(*tables: dict) -> set[tuple[str, str, str]]:
    return {(g, r, v) for t in tables for (g, r), verbs in t.items() for v in verbs}


class TestLint:
    def test_lint_is_clean_with_default_values(self, chart):
        done = chart.run("lint", str(CHART), "--strict")
        assert "0 chart(s) failed" in done.stdout
        assert "[ERROR]" not in done.stdout and "[WARNING]" not in done.stdout

    def test_lint_is_clean_with_custom_values(self, chart, custom_values):
        done = chart.run("lint", str(CHART), "--strict", "--values", str(custom_values))
        assert "0 chart(s) failed" in done.stdout

    @pytest.mark.parametrize("bad,complaint", [
        ("logLevel=loud", "logLevel"),
        ("statusInterval=0", "statusInterval"),
        ("moveGraceSeconds=-1", "moveGraceSeconds"),
        ("metrics.port=80", "port"),
        ("watchNamespaces[0]=Not_A_Namespace", "watchNamespaces"),
        ("unknownKey=1", "unknownKey"),
        ("autoconfigIngress.issuer=Vault/x", "issuer"),
    ])
    def test_the_values_schema_rejects_bad_values(self, chart, bad, complaint):
        done = chart.run("template", RELEASE, str(CHART), "--set", bad, check=False)
        assert done.returncode != 0
        assert complaint in done.stderr


class TestStrictValidity:
    @pytest.mark.parametrize("variant", ["default", "custom", "all-namespaces-with-extras"])
    def test_every_templated_object_is_valid_for_kubernetes_1_36(self, chart, custom_values, variant):
        if variant == "default":
            objects = chart.template()
        elif variant == "custom":
            objects = chart.template(values=custom_values)
        else:
            objects = chart.template("networkPolicy.enabled=true", "metrics.serviceMonitor.enabled=true")
        assert objects
        skipped = []
        for obj in objects:
            if (obj["apiVersion"], obj["kind"]) in NO_SCHEMA:
                with pytest.raises(kubernetes_validate.utils.SchemaNotFoundError):
                    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
                skipped.append(obj)
                continue
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        for monitor in skipped:  # what kubernetes-validate cannot check, by hand
            spec = monitor["spec"]
            assert set(spec) == {"selector", "namespaceSelector", "endpoints"}
            assert spec["endpoints"][0]["port"] == "metrics"
            (service,) = by_kind(objects, "Service")
            assert spec["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()

    def test_default_render_has_the_expected_objects(self, chart):
        kinds = sorted(o["kind"] for o in chart.template())
        assert kinds == sorted(["ServiceAccount", "CustomResourceDefinition", "CustomResourceDefinition",
                                "ClusterRole", "ClusterRole", "ClusterRoleBinding", "ClusterRoleBinding",
                                "Service", "Deployment"])

    def test_custom_values_reach_the_objects(self, chart, custom_values):
        objects = chart.template(values=custom_values)
        (deploy,) = by_kind(objects, "Deployment")
        pod = deploy["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["image"] == "registry.example.org/mail/correo:1.2.3"
        assert container["imagePullPolicy"] == "Always"
        assert pod["imagePullSecrets"] == [{"name": "registry-creds"}]
        assert pod["serviceAccountName"] == "correo-op"
        assert pod["priorityClassName"] == "system-cluster-critical"
        assert container["resources"]["limits"]["memory"] == "1Gi"
        assert deploy["spec"]["template"]["metadata"]["labels"]["team"] == "mail"
        assert container["ports"] == [{"name": "metrics", "containerPort": 9090, "protocol": "TCP"}]
        assert {"name": "CORREO_LOG_LEVEL", "value": "debug"} in container["env"]
        # moveGraceSeconds reaches the operator as the grace its move rounds read
        grace = next(e["value"] for e in container["env"] if e["name"] == moves.GRACE_ENV)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(moves.GRACE_ENV, grace)
            assert moves.grace_from_environment() == 600.0
        assert not by_kind(objects, "CustomResourceDefinition")
        (policy,) = by_kind(objects, "NetworkPolicy")
        assert policy["spec"]["ingress"][0]["from"] == [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]
        assert {"ipBlock": {"cidr": "10.0.0.1/32"}} in policy["spec"]["egress"][1]["to"]


class TestOperatorDeployment:
    def test_one_replica_by_design_and_a_restricted_security_context(self, chart):
        (deploy,) = by_kind(chart.template(), "Deployment")
        spec = deploy["spec"]
        assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
        pod = spec["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
            assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}} in pod["volumes"]
        assert not any(v.get("hostPath") for v in pod["volumes"])

    @pytest.mark.parametrize("values,namespaces", [({}, []), ("custom", ["mail-a", "mail-b"])])
    def test_the_container_args_are_a_valid_correo_operator_command(self, chart, custom_values, values, namespaces):
        objects = chart.template(values=custom_values) if values == "custom" else chart.template()
        (deploy,) = by_kind(objects, "Deployment")
        (container,) = deploy["spec"]["template"]["spec"]["containers"]
        args = cli.build_parser().parse_args(container["args"])
        assert args.target == "correo_operator.kopfapp:main"
        assert args.namespace == namespaces
        assert args.metrics_port == container["ports"][0]["containerPort"]
        if values == "custom":
            assert args.image == "registry.example.org/mail/correo:1.2.3-services"
            assert args.rspamd_image == "registry.example.org/mail/rspamd:3.8-local"
            assert args.status_interval == 10
        else:
            assert args.image == container["image"]
            assert args.rspamd_image is None  # the operator's default (managedrspamd.DEFAULT_IMAGE)

    def test_the_autoconfig_ingress_defaults_reach_the_operator(self, chart):
        def args_of(objects):
            (deploy,) = by_kind(objects, "Deployment")
            (container,) = deploy["spec"]["template"]["spec"]["containers"]
            return cli.build_parser().parse_args(container["args"])
        plain = args_of(chart.template())
        assert (plain.ingress_class, plain.ingress_issuer) == (None, None)
        args = args_of(chart.template("autoconfigIngress.className=nginx", "autoconfigIngress.issuer=Issuer/ca"))
        assert (args.ingress_class, args.ingress_issuer) == ("nginx", "Issuer/ca")

    def test_notes_say_what_to_apply_next(self, chart):
        done = chart.run("install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client")
        notes = done.stdout.split("NOTES:", 1)[1]
        assert "kind: MailDomain" in notes and "kind: Mailbox" in notes
        assert "kubectl wait --for=condition=Ready maildomain/" in notes
        assert "dnsRecords" in notes


class TestCRDs:
    def test_the_chart_copies_are_byte_identical_to_crds(self):
        repo = sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))
        copies = sorted(p.name for p in (CHART / "files" / "crds").glob("*.yaml"))
        assert repo == copies == ["mailboxes.yaml", "maildomains.yaml"]
        match, mismatch, errors = filecmp.cmpfiles(ROOT / "crds", CHART / "files" / "crds", repo, shallow=False)
        assert mismatch == [] and errors == [], (
            f"helm/correo/files/crds/ differs from crds/ for {mismatch + errors}: copy crds/*.yaml over them")

    def test_templated_crds_are_the_same_objects_and_kept_on_uninstall(self, chart):
        templated = {o["metadata"]["name"]: o for o in by_kind(chart.template(), "CustomResourceDefinition")}
        for crd in loading.crds():
            expected = copy.deepcopy(crd)
            expected["metadata"].setdefault("annotations", {})["helm.sh/resource-policy"] = "keep"
            assert templated[crd["metadata"]["name"]] == expected

    def test_crds_can_be_left_out(self, chart):
        assert not by_kind(chart.template("crds.enabled=false"), "CustomResourceDefinition")


class TestRBAC:
    def test_all_namespaces_grants_exactly_what_the_operator_calls(self, chart):
        objects = chart.template()
        roles = {r["metadata"]["name"]: r for r in by_kind(objects, "ClusterRole")}
        assert not by_kind(objects, "Role")
        workloads = rules_as_set(roles[f"{RELEASE}-correo"]["rules"])
        cluster = rules_as_set(roles[f"{RELEASE}-correo-crds"]["rules"])
        assert workloads == table_as_set(PERMISSIONS, kopfapp.KOPF_PERMISSIONS)
        assert cluster == table_as_set(kopfapp.KOPF_CLUSTER_PERMISSIONS)
        sa = by_kind(objects, "ServiceAccount")[0]["metadata"]
        for binding in by_kind(objects, "ClusterRoleBinding"):
            assert binding["roleRef"]["name"] in roles
            assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["name"], "namespace": NAMESPACE}]

    def test_watched_namespaces_get_roles_and_nothing_cluster_wide(self, chart, custom_values):
        objects = chart.template(values=custom_values)
        assert not by_kind(objects, "ClusterRole") and not by_kind(objects, "ClusterRoleBinding")
        roles = by_kind(objects, "Role")
        assert sorted(r["metadata"]["namespace"] for r in roles) == ["mail-a", "mail-b"]
        for role in roles:
            assert rules_as_set(role["rules"]) == table_as_set(PERMISSIONS, kopfapp.KOPF_PERMISSIONS)
        bindings = by_kind(objects, "RoleBinding")
        assert sorted(b["metadata"]["namespace"] for b in bindings) == ["mail-a", "mail-b"]
        for b in bindings:
            assert b["subjects"] == [{"kind": "ServiceAccount", "name": "correo-op", "namespace": NAMESPACE}]

    def test_no_wildcards_and_no_escalation_verbs(self, chart):
        for role in by_kind(chart.template(), "ClusterRole"):
            for rule in role["rules"]:
                assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
                assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])
                assert "nodes" not in rule["resources"] and "pods/exec" not in rule["resources"]


def test_the_chart_version_follows_the_package(chart):
    meta = yaml.safe_load(Path(CHART / "Chart.yaml").read_text())
    from correo_operator import __version__
    assert meta["appVersion"] == __version__
