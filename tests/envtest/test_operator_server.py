"""The operator against the real API server: real kopf, the chart's pod, RBAC
and ServiceAccount token (``conftest.Operator``).  Children owned and exactly
what ``correo render`` prints, edits that touch only what they must, drift
repaired, idle resyncs that write nothing (counted in the API server's audit
log), reclaim policies honoured by what the StatefulSet controller made,
status with reasons and Events."""
from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from envkit import apply, condition, get, wait_for
from podkit import DOMAIN_NAME, resources

ROOT = Path(__file__).resolve().parents[2]
CHILD_KINDS = "configmaps,secrets,services,deployments,statefulsets,poddisruptionbudgets,networkpolicies"


def children(kubectl, namespace: str) -> dict[tuple[str, str], dict]:
    items = kubectl.json("get", CHILD_KINDS, "-n", namespace, "-l", f"app.kubernetes.io/instance={DOMAIN_NAME}")
    return {(o["kind"], o["metadata"]["name"]): o for o in items["items"]}


def rendered_names(objects: list[dict], tmp_path: Path) -> set[tuple[str, str]]:
    (tmp_path / "in.yaml").write_text(yaml.safe_dump_all(objects))
    done = subprocess.run([sys.executable, "-m", "correo_operator.cli", "render", str(tmp_path / "in.yaml")],
                          capture_output=True, text=True, timeout=120, check=True, cwd=ROOT)
    return {(o["kind"], o["metadata"]["name"]) for o in yaml.safe_load_all(done.stdout) if o}


@pytest.fixture
def handled(kubectl, namespace, operator):
    """The example domain applied, the operator started, and its first pass done."""
    objects = resources(namespace)
    apply(kubectl, namespace, objects)
    operator.start()
    wait_for(lambda: condition(get(kubectl, namespace, f"maildomain/{DOMAIN_NAME}")), timeout=60,
             what=f"status written\n{operator.log()[-3000:]}")
    return objects


class TestChildren:
    def test_every_rendered_object_exists_owned_by_the_maildomain(self, kubectl, namespace, operator, handled,
                                                                  tmp_path):
        expected = rendered_names(handled, tmp_path)
        wait_for(lambda: expected <= set(children(kubectl, namespace)), timeout=60, what="every child applied")
        live = children(kubectl, namespace)
        # What render prints, plus the DKIM and SRS keys the operator generates once (not in GitOps output).
        assert set(live) == expected | {("Secret", f"{DOMAIN_NAME}-dkim"), ("Secret", f"{DOMAIN_NAME}-srs")}
        domain = get(kubectl, namespace, f"maildomain/{DOMAIN_NAME}")
        for key, obj in live.items():
            assert obj["metadata"]["ownerReferences"] == [{
                "apiVersion": "correo.dev/v1alpha1", "kind": "MailDomain", "name": DOMAIN_NAME,
                "uid": domain["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}], key
        applied = kubectl.json("get", f"configmap/{DOMAIN_NAME}-config", "-n", namespace, "--show-managed-fields")
        assert {(m["manager"], m["operation"]) for m in applied["metadata"]["managedFields"]} == {("correo", "Apply")}
        assert domain["metadata"]["finalizers"] == ["correo.dev/finalizer"]

    def test_editing_a_mailbox_changes_only_the_directory_secret(self, kubectl, namespace, operator, handled,
                                                                 tmp_path):
        expected = rendered_names(handled, tmp_path)
        wait_for(lambda: expected <= set(children(kubectl, namespace)), timeout=60)
        operator.wait_passes(1)
        before = {k: o["metadata"]["resourceVersion"] for k, o in children(kubectl, namespace).items()}
        kubectl.run("patch", "mailbox", "bob", "-n", namespace, "--type=merge", "-p", '{"spec":{"quota":"2Gi"}}')
        directory = ("Secret", f"{DOMAIN_NAME}-directory")
        wait_for(lambda: children(kubectl, namespace)[directory]["metadata"]["resourceVersion"] != before[directory],
                 timeout=60, what="the directory Secret rewritten")
        operator.wait_passes(2)
        after = {k: o["metadata"]["resourceVersion"] for k, o in children(kubectl, namespace).items()}
        assert {k for k in before if after.get(k) != before[k]} == {directory}
        secret = children(kubectl, namespace)[directory]
        entries = yaml.safe_load(base64.b64decode(secret["data"]["directory.yaml"]))
        assert {m["address"]: m.get("quotaBytes") for m in entries["mailboxes"]}["bob@example.com"] == 2 << 30

    def test_a_deleted_child_is_repaired(self, kubectl, namespace, operator, handled):
        wait_for(lambda: ("Service", f"{DOMAIN_NAME}-relay") in children(kubectl, namespace), timeout=60)
        old = children(kubectl, namespace)
        kubectl.run("delete", f"service/{DOMAIN_NAME}-relay", f"configmap/{DOMAIN_NAME}-config", "-n", namespace)

        def repaired():
            now = children(kubectl, namespace)
            return all(key in now and now[key]["metadata"]["uid"] != old[key]["metadata"]["uid"]
                       for key in (("Service", f"{DOMAIN_NAME}-relay"), ("ConfigMap", f"{DOMAIN_NAME}-config")))
        wait_for(repaired, timeout=60, what="the Service and the ConfigMap re-created")

    def test_fields_others_own_are_kept_and_its_own_are_taken_back(self, kubectl, namespace, operator,
                                                                    handled):
        """Server-side apply field ownership: another manager's annotation and label on a child
        stay (and stay theirs); a field the operator sets, changed by someone else, is set back
        and owned by ``correo`` again."""
        relay = f"{DOMAIN_NAME}-relay"
        wait_for(lambda: ("Deployment", relay) in children(kubectl, namespace), timeout=60)
        kubectl.run("apply", "--server-side", "--field-manager=team-tooling", "-n", namespace, "-f", "-",
                    input=yaml.safe_dump({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {
                        "name": relay, "labels": {"team.example/cost-centre": "mail"},
                        "annotations": {"team.example/owner": "mail-team"}}}))
        kubectl.run("scale", f"deployment/{relay}", "--replicas=3", "-n", namespace)

        def owners(obj: dict) -> dict[str, str]:
            return {m["manager"]: json.dumps(m.get("fieldsV1")) for m in obj["metadata"]["managedFields"]}

        def taken_back() -> dict | None:
            obj = kubectl.json("get", f"deployment/{relay}", "-n", namespace, "--show-managed-fields")
            return obj if obj["spec"]["replicas"] == 1 and '"f:replicas"' in owners(obj).get("correo", "") else None
        obj = wait_for(taken_back, timeout=60, what=lambda: f"replicas set back to 1\n{operator.log()[-2000:]}")
        operator.wait_passes(2)
        obj = kubectl.json("get", f"deployment/{relay}", "-n", namespace, "--show-managed-fields")
        assert obj["spec"]["replicas"] == 1
        assert obj["metadata"]["labels"]["team.example/cost-centre"] == "mail"
        assert obj["metadata"]["annotations"]["team.example/owner"] == "mail-team"
        theirs = owners(obj)["team-tooling"]
        assert "team.example/owner" in theirs and "team.example/cost-centre" in theirs
        assert "team.example" not in owners(obj)["correo"]

    def test_an_idle_resync_makes_no_writes(self, kubectl, namespace, operator, handled, tmp_path):
        expected = rendered_names(handled, tmp_path)
        wait_for(lambda: expected <= set(children(kubectl, namespace)), timeout=60)
        operator.wait_passes(2)  # settled
        writes, reads = len(operator.writes()), len(operator.cp.audit_events(operator.user))
        operator.wait_passes(3)
        new = operator.writes()[writes:]
        assert new == [], "idle resyncs wrote:\n" + "\n".join(
            f"{e['verb']} {e['requestURI']}: {json.dumps(e.get('requestObject'))[:1500]}" for e in new)
        assert len(operator.cp.audit_events(operator.user)) > reads, "the resyncs did read the API"


class TestEveryNamespace:
    def test_the_default_install_serves_every_namespace_with_its_cluster_roles(self, kubectl, namespace,
                                                                                operator, tmp_path):
        """The chart's default (no ``watchNamespaces``): kopf in cluster-wide mode, following
        CRDs, with the ClusterRoles only; a MailDomain in any namespace gets its children, and
        the fixture checks that the server refused it nothing."""
        objects = resources(namespace)
        apply(kubectl, namespace, objects)
        operator.start(every_namespace=True)
        expected = rendered_names(objects, tmp_path)
        wait_for(lambda: expected <= set(children(kubectl, namespace)), timeout=90,
                 what=lambda: f"every child applied\n{operator.log()[-3000:]}")
        wait_for(lambda: condition(get(kubectl, namespace, f"maildomain/{DOMAIN_NAME}")), timeout=60,
                 what="status written")
        assert any(e.get("objectRef", {}).get("resource") == "customresourcedefinitions"
                   for e in operator.cp.audit_events(operator.user)), "kopf followed the CRDs"


class TestStatus:
    def test_a_missing_password_secret_makes_the_mailbox_not_ready_with_the_reason(self, kubectl, namespace,
                                                                                   operator, handled):
        kubectl.run("delete", "secret", "bob-password", "-n", namespace)
        wait_for(lambda: (condition(get(kubectl, namespace, "mailbox/bob")) or {}).get("reason")
                 == "PasswordSecretMissing", timeout=60, what="bob not ready: PasswordSecretMissing")
        ready = condition(get(kubectl, namespace, "mailbox/bob"))
        assert ready["status"] == "False" and "bob-password does not exist" in ready["message"]
        # The Secret comes back: the Secret watch reconciles, bob is no longer missing it.
        apply(kubectl, namespace, [o for o in handled if o["metadata"]["name"] == "bob-password"])
        wait_for(lambda: (condition(get(kubectl, namespace, "mailbox/bob")) or {}).get("reason")
                 != "PasswordSecretMissing", timeout=60, what="bob's Secret noticed")

    def test_a_mailbox_without_a_maildomain_says_so(self, kubectl, namespace, operator, handled):
        apply(kubectl, namespace, [{"apiVersion": "correo.dev/v1alpha1", "kind": "Mailbox",
                                    "metadata": {"name": "stray"},
                                    "spec": {"address": "stray@nowhere.test", "passwordSecretRef": {"name": "x"}}}])
        wait_for(lambda: (condition(get(kubectl, namespace, "mailbox/stray")) or {}).get("reason")
                 == "DomainNotFound", timeout=60, what="stray: DomainNotFound")

    def test_conditions_carry_the_generation_and_events_are_visible(self, kubectl, namespace, operator, handled):
        domain = get(kubectl, namespace, f"maildomain/{DOMAIN_NAME}")
        generation = domain["metadata"]["generation"]
        assert domain["status"]["observedGeneration"] == generation
        assert {c["observedGeneration"] for c in domain["status"]["conditions"]} == {generation}
        out = kubectl.run("get", "events", "-n", namespace, "--field-selector",
                          f"involvedObject.kind=MailDomain,involvedObject.name={DOMAIN_NAME}").stdout
        assert "maildomain/" + DOMAIN_NAME in out
        assert condition(domain)["reason"] in out  # Ready=False is told with its reason


    def test_kubectl_wait_right_after_an_edit_sees_the_edit_handled(self, kubectl, namespace, operator, handled):
        """``kubectl wait --for=condition=...`` ignores a condition whose observedGeneration is
        behind the object's generation, so right after an edit it waits for the operator."""
        ready = condition(get(kubectl, namespace, f"maildomain/{DOMAIN_NAME}"))
        kubectl.run("patch", "maildomain", DOMAIN_NAME, "-n", namespace, "--type=merge",
                    "-p", '{"spec":{"queue":{"retry":{"warnAfterSeconds":7200}}}}')
        kubectl.run("wait", f"maildomain/{DOMAIN_NAME}", "-n", namespace, "--timeout=90s",
                    f"--for=condition=Ready={ready['status']}")
        domain = get(kubectl, namespace, f"maildomain/{DOMAIN_NAME}")
        assert domain["metadata"]["generation"] >= 2
        assert condition(domain)["observedGeneration"] == domain["metadata"]["generation"]
        assert domain["status"]["observedGeneration"] == domain["metadata"]["generation"]

    def test_status_is_written_through_the_subresource_only(self, kubectl, namespace, operator, handled):
        """The operator's writes of the objects themselves touch metadata (its finalizer) and
        never spec or status; status goes through ``/status``, and a user's apply of a status
        is ignored by the server."""
        operator.wait_passes(1)
        kinds = {"maildomains", "mailboxes"}
        writes = [e for e in operator.writes() if e.get("objectRef", {}).get("resource") in kinds]
        assert {e["objectRef"].get("subresource") for e in writes} >= {"status"}
        for e in writes:
            if not e["objectRef"].get("subresource"):
                body = e.get("requestObject") or {}
                # A merge patch (an object) or a JSON patch (a list of operations on paths).
                top = {op["path"].split("/")[1] for op in body} if isinstance(body, list) else set(body)
                assert top <= {"metadata", "apiVersion", "kind"}, body
        before = condition(get(kubectl, namespace, "mailbox/alice"))
        forged = {"apiVersion": "correo.dev/v1alpha1", "kind": "Mailbox", "metadata": {"name": "alice"},
                  "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "Forged", "message": "",
                                             "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}
        kubectl.run("apply", "--server-side", "--field-manager=someone", "-n", namespace, "-f", "-",
                    input=yaml.safe_dump(forged))
        assert condition(get(kubectl, namespace, "mailbox/alice")) == before


class TestReclaim:
    @pytest.mark.parametrize("policy", ["Retain", "Delete"])
    def test_the_statefulset_volumes_follow_the_reclaim_policy(self, kubectl, namespace, controller_manager,
                                                                operator, policy):
        objects = resources(namespace)
        objects[0]["spec"]["reclaimPolicy"] = policy
        apply(kubectl, namespace, objects)
        operator.start()
        claims = {f"spool-{DOMAIN_NAME}-queue-0", f"mail-{DOMAIN_NAME}-mailstore-0"}

        def pvcs() -> dict[str, dict]:
            return {o["metadata"]["name"]: o for o in kubectl.json("get", "pvc", "-n", namespace)["items"]}
        wait_for(lambda: claims <= set(pvcs()), timeout=90, what="the StatefulSet controller's PVCs")
        kubectl.run("delete", "maildomain", DOMAIN_NAME, "-n", namespace, "--wait=false")
        # Promptly: not after kopf's default 60 s wait for a resync timer caught mid-pass.
        wait_for(lambda: get(kubectl, namespace, f"maildomain/{DOMAIN_NAME}") is None, timeout=30,
                 what=lambda: f"the finalizer done: {get(kubectl, namespace, f'maildomain/{DOMAIN_NAME}')}\n"
                              f"{operator.log()[-3000:]}")
        wait_for(lambda: not kubectl.json("get", "statefulsets", "-n", namespace)["items"], timeout=60,
                 what="the garbage collector removed the StatefulSets")
        # Every child went with its owner (the garbage collector, following ownerReferences).
        wait_for(lambda: not children(kubectl, namespace), timeout=60,
                 what=lambda: f"every child collected; left: {sorted(children(kubectl, namespace))}")
        if policy == "Retain":
            wait_for(lambda: not kubectl.json("get", "pods", "-n", namespace)["items"], timeout=60)
            left = pvcs()
            assert claims <= set(left)
            assert not any(left[c]["metadata"].get("deletionTimestamp") for c in claims)
            events = kubectl.run("get", "events", "-n", namespace).stdout
            assert "VolumesRetained" in events
        else:
            wait_for(lambda: not claims & set(pvcs()), timeout=90, what="the PVCs deleted")
