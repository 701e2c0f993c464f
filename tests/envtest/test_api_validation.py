"""What the real API server accepts and refuses: every example and every object
``correo render`` makes pass ``--dry-run=server --validate=strict``; every
broken MailDomain or Mailbox the foundation tests feed ``correo validate`` is
refused by the server too, at the same field and for the same reason."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from correo_operator import loading

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"

DOMAIN = {"apiVersion": "correo.dev/v1alpha1", "kind": "MailDomain", "metadata": {"name": "example-com"},
          "spec": {"domain": "example.com"}}
MAILBOX = {"apiVersion": "correo.dev/v1alpha1", "kind": "Mailbox", "metadata": {"name": "bob"},
           "spec": {"address": "bob@example.com", "passwordSecretRef": {"name": "bob-password"}}}
SECRET = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bob-password"},
          "stringData": {"password": "hunter2"}}


def namespaces_in(objects: list[dict]) -> set[str]:
    return {o["metadata"].get("namespace", "default") for o in objects}


def ensure_namespaces(control_plane, names: set[str]) -> None:
    for name in names:
        control_plane.request("POST", "/api/v1/namespaces",
                              {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})


class TestAccepted:
    @pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.iterdir() if p.is_dir()))
    def test_every_example_passes_strict_server_validation(self, kubectl, control_plane, example):
        docs = [d for f in sorted((EXAMPLES / example).glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
        # cert-manager's CRDs are not installed here (and not ours to copy): its Certificate is
        # the one object the server cannot check.
        foreign = [d for d in docs if d["apiVersion"].startswith("cert-manager.io/")]
        assert {(d["apiVersion"], d["kind"]) for d in foreign} <= {("cert-manager.io/v1", "Certificate")}
        docs = [d for d in docs if d not in foreign]
        ensure_namespaces(control_plane, namespaces_in(docs))
        out = kubectl.run("apply", "--server-side", "--dry-run=server", "--validate=strict",
                          "-f", "-", input=yaml.safe_dump_all(docs)).stdout
        assert out.count("(server dry run)") == len(docs), out
        assert {"MailDomain", "Mailbox", "Secret"} <= {d["kind"] for d in docs}

    def test_every_rendered_object_passes_strict_server_validation(self, kubectl, control_plane):
        done = subprocess.run([sys.executable, "-m", "correo_operator.cli", "render", str(EXAMPLES)],
                              capture_output=True, text=True, timeout=120, check=True, cwd=ROOT)
        objects = [o for o in yaml.safe_load_all(done.stdout) if o]
        kinds = {o["kind"] for o in objects}
        assert {"ConfigMap", "Secret", "Deployment", "StatefulSet", "Service", "PodDisruptionBudget",
                "NetworkPolicy"} <= kinds
        ensure_namespaces(control_plane, namespaces_in(objects))
        # As the operator sends them (server-side apply) and as `kubectl create` would.
        out = kubectl.run("apply", "--server-side", "--dry-run=server", "--validate=strict", "-f", "-",
                          input=done.stdout).stdout
        assert out.count("(server dry run)") == len(objects), out
        out = kubectl.run("create", "--dry-run=server", "--validate=strict", "-f", "-", input=done.stdout).stdout
        assert out.count("(server dry run)") == len(objects), out


def domain(**spec) -> dict:
    return {**DOMAIN, "spec": {**DOMAIN["spec"], **spec}}


def mailbox(drop: str | None = None, **spec) -> dict:
    body = {**MAILBOX["spec"], **spec}
    if drop:
        body.pop(drop)
    return {**MAILBOX, "spec": body}


# (id, the broken object, the field both name, what the server says, what correo validate says)
BROKEN = [
    ("domain-missing", {**DOMAIN, "spec": {"hostname": "mail.example.com"}},
     "spec.domain", "Required value", "required"),
    ("domain-not-a-domain", domain(domain="Not_A_Domain"),
     "spec.domain", 'Invalid value: "Not_A_Domain"', "not a valid domain name"),
    ("give-up-not-after-warn", domain(queue={"retry": {"warnAfterSeconds": 600, "giveUpAfterSeconds": 600}}),
     "spec.queue.retry.giveUpAfterSeconds", "giveUpAfterSeconds must be greater than warnAfterSeconds",
     "giveUpAfterSeconds must be greater than warnAfterSeconds"),
    # The rule compares with the default maxDelaySeconds (3600): rules see defaulted objects.
    ("initial-delay-above-default-max", domain(queue={"retry": {"initialDelaySeconds": 7200}}),
     "spec.queue.retry.maxDelaySeconds", "maxDelaySeconds must not be less than initialDelaySeconds",
     "maxDelaySeconds must not be less than initialDelaySeconds"),
    ("replicas-not-a-number", domain(relay={"replicas": "three"}),
     "spec.relay.replicas", "must be of type integer", "expected integer"),
    ("replicas-zero", domain(relay={"replicas": 0}),
     "spec.relay.replicas", "should be greater than or equal to 1", "below the minimum 1"),
    ("service-type-unknown", domain(relay={"serviceType": "External"}),
     "spec.relay.serviceType", 'Unsupported value: "External"', "is not one of"),
    ("reclaim-policy-unknown", domain(reclaimPolicy="Destroy"),
     "spec.reclaimPolicy", 'Unsupported value: "Destroy"', "is not one of"),
    ("alias-domain-is-the-domain", domain(aliasDomains=["example.com"]),
     "spec.aliasDomains", "an alias domain must differ from the domain itself",
     "an alias domain must differ from the domain itself"),
    ("unknown-field", domain(replicaz=3),
     "spec.replicaz", 'unknown field "spec.replicaz"', 'unknown field "replicaz"'),
    # spec.filter: the CEL rules and the schema, as correo validate says them.
    ("rspamd-neither-url-nor-managed", domain(filter={"rspamd": {"timeoutSeconds": 5}}),
     "spec.filter.rspamd", "give the url of an rspamd", "give the url of an rspamd"),
    ("rspamd-managed-with-url", domain(filter={"rspamd": {"managed": True, "url": "http://x:1"}}),
     "spec.filter.rspamd.url", "a managed rspamd has no url", "a managed rspamd has no url"),
    ("rspamd-managed-with-password", domain(filter={"rspamd": {"managed": True, "passwordSecretRef": {"name": "p"}}}),
     "spec.filter.rspamd.passwordSecretRef", "a password is for an rspamd given by url",
     "a password is for an rspamd given by url"),
    ("rspamd-on-failure-unknown", domain(filter={"rspamd": {"url": "http://r:1", "onFailure": "Later"}}),
     "spec.filter.rspamd.onFailure", 'Unsupported value: "Later"', "is not one of"),
    ("dnsbl-threshold-without-score-zone", domain(filter={"dnsbl": {"threshold": 2, "zones": [{"zone": "bl.test"}]}}),
     "spec.filter.dnsbl.threshold", "a threshold needs at least one zone with action Score",
     "a threshold needs at least one zone with action Score"),
    ("address-missing", mailbox(drop="address"), "spec.address", "Required value", "required"),
    ("address-with-a-space", mailbox(address="bob smith@example.com"), "spec.address",
     "address must be a mail address such as alice@example.com", "mail address"),
    ("password-ref-missing", mailbox(drop="passwordSecretRef"), "spec.passwordSecretRef",
     "Required value", "required"),
    ("alias-is-the-address", mailbox(aliases=["bob@example.com"]), "spec.aliases",
     "a mailbox's aliases must differ from its address", "a mailbox's aliases must differ from its address"),
    ("keep-copy-without-forward", mailbox(keepCopy=False), "spec.keepCopy",
     "keepCopy may only be false when forwardTo lists where the mail goes",
     "keepCopy may only be false when forwardTo lists where the mail goes"),
    ("quota-not-a-quantity", mailbox(quota="lots"), "spec.quota", 'Invalid value: "lots"',
     "is not a quantity such as"),
    ("alias-not-an-address", mailbox(aliases=["nope"]), "spec.aliases[0]", 'Invalid value: "nope"',
     "not a valid mail address"),
]


class TestRefused:
    @pytest.mark.parametrize("obj,field,server_says,correo_says", [b[1:] for b in BROKEN],
                             ids=[b[0] for b in BROKEN])
    def test_the_server_and_correo_validate_refuse_it_at_the_same_field(
            self, kubectl, namespace, tmp_path, obj, field, server_says, correo_says):
        done = kubectl.run("create", "--dry-run=server", "--validate=strict", "-n", namespace, "-f", "-",
                           input=yaml.safe_dump(obj), check=False)
        assert done.returncode != 0, f"the server accepted {obj}"
        lines = [line for line in done.stderr.splitlines() if field in line]
        assert any(server_says in line for line in lines), done.stderr
        # correo validate (the same YAML, with a valid MailDomain and Secret beside a Mailbox).
        context = [] if obj["kind"] == "MailDomain" else [DOMAIN, SECRET]
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump_all([obj, *context]))
        errors = [str(e) for e in loading.load_paths([str(path)]).errors]
        assert any(f": {field}: " in e and correo_says in e for e in errors), errors

    def test_cel_rules_are_checked_against_what_is_stored_not_only_on_create(self, kubectl, namespace):
        kubectl.run("apply", "--server-side", "-n", namespace, "-f", "-", input=yaml.safe_dump(DOMAIN))
        done = kubectl.run("patch", "maildomain", "example-com", "-n", namespace, "--type=merge", "-p",
                           '{"spec":{"queue":{"retry":{"warnAfterSeconds":500000}}}}', check=False)
        assert done.returncode != 0
        assert "spec.queue.retry.giveUpAfterSeconds" in done.stderr
        assert "giveUpAfterSeconds must be greater than warnAfterSeconds" in done.stderr

    def test_a_valid_object_comes_back_with_every_default_filled_in(self, kubectl, namespace):
        kubectl.run("apply", "--server-side", "-n", namespace, "-f", "-", input=textwrap.dedent("""\
            apiVersion: correo.dev/v1alpha1
            kind: MailDomain
            metadata: {name: example-com}
            spec: {domain: example.com}
            """))
        spec = kubectl.json("get", "maildomain", "example-com", "-n", namespace)["spec"]
        assert spec["queue"]["retry"] == {"initialDelaySeconds": 300, "maxDelaySeconds": 3600, "backoffFactor": 2,
                                          "warnAfterSeconds": 14400, "giveUpAfterSeconds": 432000}
        assert spec["relay"]["replicas"] == 2 and spec["reclaimPolicy"] == "Retain"
        assert spec["filter"]["senderAuth"] == {"enabled": True, "rejectSpfFail": True, "protectOwnDomains": True,
                                                "enforceDmarc": True}
        assert spec["filter"]["dnsbl"] == {"threshold": 0, "cacheSeconds": 300}
        # What the server defaulted is what correo's model defaults (correo up = the cluster).
        from correo_operator import model
        assert model.MailDomain.from_object({**DOMAIN, "spec": {"domain": "example.com"}}) == \
            model.MailDomain.from_object({**DOMAIN, "spec": spec})
