"""The CRDs are valid API objects, structural, self-explaining and defaulted."""
from __future__ import annotations

import copy

import celpy
import jsonschema
import kubernetes_validate
import pytest

from correo_operator import loading

KINDS = list(loading.KINDS)


def walk(node, path="spec"):
    yield path, node
    for key, sub in (node.get("properties") or {}).items():
        yield from walk(sub, f"{path}.{key}")
    if "items" in node:
        yield from walk(node["items"], f"{path}[]")


@pytest.mark.parametrize("kind", KINDS)
def test_crd_is_a_valid_customresourcedefinition_for_kubernetes_1_36(kind):
    kubernetes_validate.validate(loading.crd(kind), "1.36.0", strict=True)


@pytest.mark.parametrize("kind", KINDS)
def test_crd_names_group_and_category(kind):
    crd = loading.crd(kind)
    assert crd["spec"]["group"] == "correo.dev"
    assert crd["spec"]["scope"] == "Namespaced"
    assert "mail" in crd["spec"]["names"]["categories"]
    assert crd["spec"]["names"]["shortNames"] == {"MailDomain": ["md"], "Mailbox": ["mbx"]}[kind]
    (version,) = crd["spec"]["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}


@pytest.mark.parametrize("kind", KINDS)
def test_every_field_has_a_type_and_a_description_for_kubectl_explain(kind):
    top = loading.schema(kind)
    missing = []
    for section in ("spec", "status"):
        for path, node in walk(top["properties"][section], section):
            if "type" not in node:
                missing.append(f"{path}: no type")
            if not node.get("description"):
                missing.append(f"{path}: no description")
    assert missing == []


@pytest.mark.parametrize("kind", KINDS)
def test_status_is_fully_typed(kind):
    status = loading.schema(kind)["properties"]["status"]
    for path, node in walk(status, "status"):
        assert "x-kubernetes-preserve-unknown-fields" not in node, path
        if node.get("type") == "object":
            assert node.get("properties"), f"{path} is an untyped object"


@pytest.mark.parametrize("kind", KINDS)
def test_conditions_follow_the_kubernetes_shape_keyed_by_type(kind):
    conditions = loading.schema(kind)["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    item = conditions["items"]
    assert set(item["required"]) == {"type", "status", "lastTransitionTime", "reason", "message"}
    assert item["properties"]["status"]["enum"] == ["True", "False", "Unknown"]
    assert item["properties"]["lastTransitionTime"]["format"] == "date-time"


@pytest.mark.parametrize("kind", KINDS)
def test_every_default_is_valid_against_its_own_schema(kind):
    # The API server rejects a CRD whose defaults do not validate.
    for path, node in walk(loading.schema(kind)["properties"]["spec"]):
        if "default" in node:
            sub = loading._strict(node, top=False)
            default = copy.deepcopy(node["default"])
            if isinstance(default, dict):
                default = loading._defaults(node, default)
            jsonschema.validate(default, sub)


@pytest.mark.parametrize("kind", KINDS)
def test_every_cel_rule_compiles(kind):
    env = celpy.Environment()
    rules = [r["rule"] for _, node in walk(loading.schema(kind)["properties"]["spec"])
             for r in node.get("x-kubernetes-validations", [])]
    assert rules
    for rule in rules:
        env.compile(rule)


def test_printer_columns_show_what_an_admin_wants():
    def columns(kind):
        (version,) = loading.crd(kind)["spec"]["versions"]
        return [c["name"] for c in version["additionalPrinterColumns"] if c.get("priority", 0) == 0]
    assert columns("MailDomain") == ["Domain", "Ready", "Deferred", "Bounced", "Age"]
    assert columns("Mailbox") == ["Address", "Ready", "Used", "Quota", "Age"]


def test_retry_defaults_are_the_classic_sendmail_policy():
    obj = loading.apply_defaults({"apiVersion": "correo.dev/v1alpha1", "kind": "MailDomain",
                                  "metadata": {"name": "x"}, "spec": {"domain": "x.test"}})
    retry = obj["spec"]["queue"]["retry"]
    assert retry["warnAfterSeconds"] == 4 * 3600
    assert retry["giveUpAfterSeconds"] == 5 * 86400
    assert obj["spec"]["reclaimPolicy"] == "Retain"


def test_crd_files_are_what_the_package_ships(repo_root):
    for name in loading.KINDS.values():
        assert (repo_root / "crds" / name).read_bytes() == (loading.crd_dir() / name).read_bytes()
