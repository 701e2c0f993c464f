"""The CRDs as a real API server (v1.36) takes them: accepted from ``crds/`` and
from the chart, established, every field explained by ``kubectl explain``, the
printer columns filled in ``kubectl get md,mbx``; plus the check that catches
what only a server used to catch (every CEL rule holds on every default)."""
from __future__ import annotations

import copy
import re
from pathlib import Path

import celpy
import pytest
import yaml

from correo_operator import loading

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "correo"
KINDS = {"MailDomain": "maildomains.correo.dev", "Mailbox": "mailboxes.correo.dev"}


def objects_of(node: dict, path: str):
    """(path, node) of every object node with properties under ``node``."""
    if node.get("type") == "object" and node.get("properties"):
        yield path, node
        for key, sub in node["properties"].items():
            yield from objects_of(sub, f"{path}.{key}")
    if node.get("type") == "array" and "items" in node:
        yield from objects_of(node["items"], path)


def leaf_paths(node: dict, path: str) -> set[str]:
    out = {path}
    for key, sub in (node.get("properties") or {}).items():
        out |= leaf_paths(sub, f"{path}.{key}")
    if node.get("type") == "array" and "items" in node:
        out |= {p for p in leaf_paths(node["items"], path) if p != path}
    return out


def words(text: str) -> str:
    return " ".join(text.split())


class TestRulesOnDefaults:
    """The API server evaluates every CEL rule against every ``default`` (as
    written, without filling in nested defaults) and refuses the CRD when one
    fails or cannot be evaluated: checked here without a server."""

    @pytest.mark.parametrize("kind", list(KINDS))
    def test_every_rule_holds_on_every_default(self, kind):
        def walk(node, path):
            yield path, node
            for key, sub in (node.get("properties") or {}).items():
                yield from walk(sub, f"{path}.{key}")
            if "items" in node:
                yield from walk(node["items"], f"{path}[]")

        env = celpy.Environment()
        checked = 0
        for path, node in walk(loading.schema(kind)["properties"]["spec"], "spec"):
            if "default" not in node:
                continue
            for rule in node.get("x-kubernetes-validations", []):
                program = env.program(env.compile(rule["rule"]))
                try:
                    ok = program.evaluate({"self": celpy.json_to_cel(copy.deepcopy(node["default"]))})
                except Exception as exc:  # noqa: BLE001 - "no such key" is what the server reports
                    raise AssertionError(f"{path}: rule {rule['rule']!r} cannot be evaluated on the "
                                         f"default {node['default']!r}: {exc}") from exc
                assert bool(ok), f"{path}: the default {node['default']!r} breaks {rule['rule']!r}"
                checked += 1
        if kind == "MailDomain":
            assert checked >= 2  # queue.retry's two rules, with retry defaulting to {}

    @pytest.mark.parametrize("kind", list(KINDS))
    def test_no_transition_rules_that_would_need_an_old_object(self, kind):
        # Transition rules (oldSelf) are only allowed where the old value is known;
        # correo uses none: if one is added, it needs a server test of its own here.
        text = yaml.safe_dump(loading.crd(kind))
        assert "oldSelf" not in text


class TestServerAcceptsTheCRDs:
    @pytest.mark.parametrize("kind", list(KINDS))
    def test_applied_server_side_from_crds_and_established(self, kubectl, kind):
        crd = kubectl.json("get", "crd", KINDS[kind], "--show-managed-fields")
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conditions["Established"] == "True" and conditions["NamesAccepted"] == "True"
        assert conditions.get("NonStructuralSchema", "False") == "False"
        managers = {m["manager"] for m in crd["metadata"]["managedFields"] if m["operation"] == "Apply"}
        assert "kubectl" in managers  # server-side applied, not created client-side
        # Applying the same files again changes nothing.
        done = kubectl.run("apply", "--server-side", "-f", str(ROOT / "crds" / Path(loading.KINDS[kind]).name))
        assert "serverside-applied" in done.stdout
        assert kubectl.json("get", "crd", KINDS[kind])["metadata"]["resourceVersion"] == \
            crd["metadata"]["resourceVersion"]

    def test_the_charts_crds_are_accepted(self, kubectl, helm_binary):
        done = __import__("subprocess").run(
            [helm_binary, "template", "correo", str(CHART), "--show-only", "templates/crds.yaml"],
            capture_output=True, text=True, timeout=120, check=True)
        crds = [d for d in yaml.safe_load_all(done.stdout) if d]
        assert sorted(c["metadata"]["name"] for c in crds) == sorted(KINDS.values())
        out = kubectl.run("apply", "--server-side", "--dry-run=server", "--validate=strict", "-f", "-",
                          input=done.stdout).stdout
        assert out.count("serverside-applied (server dry run)") == 2

    def test_a_crd_whose_default_breaks_a_rule_is_refused_by_the_server(self, kubectl):
        # The regression the issue reported, kept as a proof that the server checks it.
        crd = loading.crd("MailDomain")
        retry = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"][
            "queue"]["properties"]["retry"]
        retry["x-kubernetes-validations"] = [{"rule": "self.maxDelaySeconds >= self.initialDelaySeconds"}]
        done = kubectl.run("apply", "--server-side", "--dry-run=server", "-f", "-", input=yaml.safe_dump(crd),
                           check=False)
        assert done.returncode != 0
        assert "properties[retry].default" in done.stderr and "no such key: maxDelaySeconds" in done.stderr


class TestKubectlExplain:
    @pytest.mark.parametrize("kind", list(KINDS))
    def test_the_recursive_tree_is_every_spec_field(self, kubectl, kind):
        out = kubectl.run("explain", f"{kind.lower()}.spec", "--recursive").stdout
        fields = out.split("FIELDS:", 1)[1].splitlines()
        paths, stack = set(), []
        for line in fields:
            m = re.match(r"^( *)(\w+)\t<", line)
            if not m:
                continue
            depth = len(m.group(1)) // 2 - 1
            stack[depth:] = [m.group(2)]
            paths.add("spec." + ".".join(stack))
        expected = leaf_paths(loading.schema(kind)["properties"]["spec"], "spec") - {"spec"}
        assert paths == expected

    @pytest.mark.parametrize("kind", list(KINDS))
    def test_every_field_is_explained_with_its_type_and_description(self, kubectl, kind):
        spec = loading.schema(kind)["properties"]["spec"]
        for path, node in objects_of(spec, "spec"):
            out = words(kubectl.run("explain", f"{kind.lower()}.{path}").stdout)
            assert words(node["description"]) in out, path
            for key, sub in node["properties"].items():
                kind_word = {"object": "Object", "array": "[]"}.get(sub["type"], sub["type"])
                assert f"{key} <{kind_word}" in out, f"{path}.{key}"
                assert words(sub["description"]) in out, f"{path}.{key}"

    def test_the_readme_example_explains_the_retry_policy(self, kubectl):
        out = words(kubectl.run("explain", "maildomain.spec.queue.retry").stdout)
        assert "giveUpAfterSeconds <integer>" in out and "(default 5 days)" in out


class TestPrinterColumns:
    def test_kubectl_get_shows_domain_ready_and_queue_figures(self, kubectl, control_plane, namespace):
        kubectl.run("apply", "--server-side", "-n", namespace, "-f", "-", input=yaml.safe_dump_all([
            {"apiVersion": "correo.dev/v1alpha1", "kind": "MailDomain", "metadata": {"name": "example-com"},
             "spec": {"domain": "example.com"}},
            {"apiVersion": "correo.dev/v1alpha1", "kind": "Mailbox", "metadata": {"name": "bob"},
             "spec": {"address": "bob@example.com", "passwordSecretRef": {"name": "bob-password"}}},
        ]))
        condition = {"type": "Ready", "status": "False", "reason": "QueueUnavailable", "message": "waiting",
                     "lastTransitionTime": "2026-11-27T06:00:00Z", "observedGeneration": 1}
        for plural, name, status in (
                ("maildomains", "example-com", {"conditions": [condition], "queue": {"deferred": 3, "bounced": 1}}),
                ("mailboxes", "bob", {"conditions": [dict(condition, status="True", reason="Ready")],
                                      "usage": {"used": "12.5Mi", "quota": "1Gi"}})):
            code, doc = control_plane.request(
                "PATCH", f"/apis/correo.dev/v1alpha1/namespaces/{namespace}/{plural}/{name}/status",
                {"status": status}, content_type="application/merge-patch+json")
            assert code == 200, doc
        out = kubectl.run("get", "md,mbx", "-n", namespace).stdout.splitlines()
        table = [line.split() for line in out if line.strip()]
        assert table[0] == ["NAME", "DOMAIN", "READY", "DEFERRED", "BOUNCED", "AGE"]
        assert table[1][:5] == ["maildomain.correo.dev/example-com", "example.com", "False", "3", "1"]
        assert table[2] == ["NAME", "ADDRESS", "READY", "USED", "QUOTA", "AGE"]
        assert table[3][:5] == ["mailbox.correo.dev/bob", "bob@example.com", "True", "12.5Mi", "1Gi"]
        wide = kubectl.run("get", "md", "-n", namespace, "-o", "wide").stdout
        assert "REASON" in wide.splitlines()[0] and "QueueUnavailable" in wide
