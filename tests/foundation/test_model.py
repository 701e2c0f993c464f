"""The typed model and the CRDs say the same thing: every spec property has a
field and every field a property, of the matching type, with the same default;
and an object read from the API is what the API server would hold."""
from __future__ import annotations

import dataclasses
import types
import typing

import pytest

from correo_operator import loading, model

SPECS = {"MailDomain": model.MailDomainSpec, "Mailbox": model.MailboxSpec}
SCALARS = {"string": str, "integer": int, "number": float, "boolean": bool}


def _unwrap(tp):
    """(the type, whether None is allowed)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return inner[0], type(None) in typing.get_args(tp)
    return tp, False


def _compare(node: dict, cls: type, path: str) -> list[str]:
    """Differences between one object node of a CRD schema and its dataclass."""
    problems = []
    hints = typing.get_type_hints(cls)
    fields = {model.camel(f.name): f for f in dataclasses.fields(cls)}
    props = node.get("properties", {})
    for key in sorted(set(props) - set(fields)):
        problems.append(f"{path}.{key}: in the CRD, no field {cls.__name__}.{key} in the model")
    for key in sorted(set(fields) - set(props)):
        problems.append(f"{path}.{key}: field {cls.__name__}.{fields[key].name} is not in the CRD")
    required = set(node.get("required", []))
    for key in sorted(set(props) & set(fields)):
        prop, f, where = props[key], fields[key], f"{path}.{key}"
        tp, optional = _unwrap(hints[f.name])
        has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        if key in required and has_default:
            problems.append(f"{where}: required in the CRD but has a default in the model")
        if key not in required and not has_default:
            problems.append(f"{where}: optional in the CRD but required in the model")
        kind = prop.get("type")
        if kind == "object":
            if not dataclasses.is_dataclass(tp):
                problems.append(f"{where}: an object in the CRD, {tp} in the model")
                continue
            if "default" in prop and (prop["default"] != {} or f.default_factory is not tp):
                problems.append(f"{where}: the CRD defaults it to {prop['default']}; the model needs "
                                f"default_factory={tp.__name__}")
            if "default" not in prop and key not in required and not (optional and f.default is None):
                problems.append(f"{where}: optional without a CRD default: must be {tp.__name__} | None = None")
            problems += _compare(prop, tp, where)
        elif kind == "array":
            item = SCALARS.get(prop["items"].get("type"))
            args = typing.get_args(tp) if typing.get_origin(tp) is tuple else ()
            if prop["items"].get("type") == "object" and len(args) == 2 and dataclasses.is_dataclass(args[0]):
                problems += _compare(prop["items"], args[0], f"{where}[]")  # a list of objects
            elif typing.get_origin(tp) is not tuple or args != (item, ...):
                problems.append(f"{where}: an array of {prop['items'].get('type')} in the CRD, {tp} in the model")
            if key not in required and f.default != ():
                problems.append(f"{where}: a list defaults to () in the model")
        else:
            if SCALARS.get(kind) is not tp:
                problems.append(f"{where}: {kind} in the CRD, {tp} in the model")
            elif "default" in prop and f.default != prop["default"]:
                problems.append(f"{where}: default {prop['default']!r} in the CRD, {f.default!r} in the model")
            elif "default" not in prop and key not in required and not (optional and f.default is None):
                problems.append(f"{where}: no default in the CRD, so the model's must be None")
    return problems


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_every_spec_field_of_the_crd_is_in_the_model_and_back(kind):
    spec = loading.schema(kind)["properties"]["spec"]
    assert _compare(spec, SPECS[kind], "spec") == []


def test_the_comparison_notices_a_missing_field_and_a_wrong_default():
    spec = loading.schema("MailDomain")["properties"]["spec"]
    changed = {**spec, "properties": {**spec["properties"], "colour": {"type": "string"},
                                      "defaultQuota": {"type": "string", "default": "2Gi"}}}
    problems = _compare(changed, model.MailDomainSpec, "spec")
    assert any("spec.colour: in the CRD" in p for p in problems)
    assert any("spec.defaultQuota: default '2Gi'" in p for p in problems)


def _sample(node: dict, every_optional_object: bool) -> dict:
    """An object with its required fields (and, if asked, every optional object) set."""
    out = {}
    for key, prop in node.get("properties", {}).items():
        if key in node.get("required", []) or (every_optional_object and prop.get("type") == "object"
                                               and "default" not in prop):
            out[key] = (_sample(prop, every_optional_object) if prop.get("type") == "object"
                        else {"string": "x@example.com", "integer": 7, "boolean": True}[prop["type"]])
    return out


@pytest.mark.parametrize("kind", sorted(SPECS))
@pytest.mark.parametrize("every_optional_object", [False, True])
def test_the_model_fills_in_what_the_api_server_defaults(kind, every_optional_object):
    spec = _sample(loading.schema(kind)["properties"]["spec"], every_optional_object)
    obj = {"apiVersion": model.API_VERSION, "kind": kind, "metadata": {"name": "n"}, "spec": spec}
    defaulted = loading.apply_defaults(obj)["spec"]
    assert model.to_dict(model.from_object(obj).spec) == defaulted


def test_an_object_from_the_api_reads_with_metadata_and_status():
    obj = {"apiVersion": model.API_VERSION, "kind": "Mailbox",
           "metadata": {"name": "alice", "namespace": "mail", "uid": "u-1", "generation": 4, "resourceVersion": "9",
                        "labels": {"x": "y"}, "managedFields": []},
           "spec": {"address": "Alice@Example.COM", "passwordSecretRef": {"name": "pw"}, "aliases": ["a@example.com"]},
           "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    mb = model.from_object(obj)
    assert isinstance(mb, model.Mailbox)
    assert (mb.name, mb.namespace, mb.metadata.uid, mb.metadata.generation) == ("alice", "mail", "u-1", 4)
    assert mb.spec.aliases == ("a@example.com",) and mb.spec.password_secret_ref.key == "password"
    assert mb.status["conditions"][0]["type"] == "Ready"
    assert mb.domain_key == ("mail", "example.com")
    with pytest.raises(dataclasses.FrozenInstanceError):
        mb.spec.suspended = True  # type: ignore[misc]


@pytest.mark.parametrize("spec,path", [
    ({"passwordSecretRef": {"name": "pw"}}, "spec.address"),
    ({"address": "a@example.com", "passwordSecretRef": {"name": "pw"}, "keepCopy": "no"}, "spec.keepCopy"),
    ({"address": "a@example.com", "passwordSecretRef": {"name": "pw"}, "aliases": "b@example.com"}, "spec.aliases"),
])
def test_an_object_that_does_not_fit_names_the_field(spec, path):
    with pytest.raises(model.ModelError) as err:
        model.Mailbox.from_object({"metadata": {"name": "m"}, "spec": spec})
    assert err.value.path == path


def test_a_mailbox_belongs_to_the_maildomain_of_its_namespace_serving_its_domain():
    def domain(name, ns="mail", **spec):
        return model.MailDomain.from_object({"metadata": {"name": name, "namespace": ns}, "spec": spec})

    def mailbox(address, ns="mail"):
        return model.Mailbox.from_object({"metadata": {"name": "m", "namespace": ns},
                                          "spec": {"address": address, "passwordSecretRef": {"name": "pw"}}})
    a = domain("a", domain="example.com", aliasDomains=["example.net"])
    b = domain("b", domain="example.org")
    elsewhere = domain("c", ns="other", domain="example.com")
    assert model.belongs(mailbox("x@EXAMPLE.net"), a)
    assert not model.belongs(mailbox("x@example.com", ns="other"), a)
    assert model.domain_of(mailbox("x@example.com"), [b, elsewhere, a]) is a
    assert model.domain_of(mailbox("x@nowhere.io"), [a, b]) is None
    gone = domain("0", domain="example.com")
    gone = dataclasses.replace(gone, metadata=dataclasses.replace(gone.metadata, deletion_timestamp="now"))
    assert model.domain_of(mailbox("x@example.com"), [gone, a]) is a
