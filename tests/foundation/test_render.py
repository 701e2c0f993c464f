"""render(): every object a real API server would accept (strict, 1.36.0),
deterministic, hashes only, and the files in it are what the servers read."""
from __future__ import annotations

import base64
import copy
import dataclasses

import bcrypt
import kubernetes_validate
import pytest
import yaml

from correo_operator import loading, model, render
from correo_server import config as cfgmod
from correo_server import directory as dirmod
from correo_server import passwords

K8S = "1.36.0"
UID = "0b7a3d2e-1111-4c5d-9e8f-123456789abc"


def maildomain(**spec):
    obj = {"apiVersion": "correo.dev/v1alpha1", "kind": "MailDomain",
           "metadata": {"name": "example-com", "namespace": "mail", "uid": UID, "generation": 1},
           "spec": {"domain": "example.com", **spec}}
    return model.MailDomain.from_object(obj)


def mailbox(local, secret="pw", **spec):
    return model.Mailbox.from_object({
        "apiVersion": "correo.dev/v1alpha1", "kind": "Mailbox",
        "metadata": {"name": local.replace(".", "-"), "namespace": "mail"},
        "spec": {"address": f"{local}@example.com", "passwordSecretRef": {"name": secret}, **spec}})


def secret(name, value, key="password"):
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "mail"},
            "stringData": {key: value}}


FAST_HASH = "{BCRYPT}" + bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode()

CASES = {
    "no-tls": (maildomain(), [mailbox("alice")], {"pw": secret("pw", "plain-password")}),
    "tls-and-aliases": (
        maildomain(aliasDomains=["example.net", "example.org"], tls={"secretName": "mail-tls"},
                   relay={"serviceType": "LoadBalancer", "smarthost": {
                       "host": "smtp.relay.test", "credentialsSecretRef": {"name": "smart"}}},
                   reclaimPolicy="Delete", dkim={"selector": "s1"}),
        [mailbox("alice", aliases=["al@example.net"]), mailbox("bob", forwardTo=["b@else.test"], keepCopy=False)],
        {"pw": secret("pw", FAST_HASH), "smart": {"stringData": {"username": "u", "password": "p"}}},
    ),
    "zero-mailboxes": (maildomain(), [], {}),
    "no-pop3-no-imap": (maildomain(mailstore={"imap": False, "pop3": False}), [], {}),
    "500-mailboxes": (maildomain(), [mailbox(f"user{i}") for i in range(500)], {"pw": secret("pw", FAST_HASH)}),
}


def rendered(case):
    domain, mailboxes, secrets = CASES[case]
    return render.render(domain, mailboxes, secrets)


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_rendered_object_is_strictly_valid_for_kubernetes_1_36(case):
    for obj in rendered(case):
        kubernetes_validate.validate(obj, K8S, strict=True)


def test_every_example_renders_strictly_valid_objects(examples_dir):
    loaded = loading.load_paths([str(examples_dir)])
    from correo_operator.commands import render_documents
    objects = render_documents(loaded)
    assert len(objects) > 20
    for obj in objects:
        kubernetes_validate.validate(obj, K8S, strict=True)


def test_render_is_deterministic_same_input_same_bytes():
    a = yaml.safe_dump_all(rendered("tls-and-aliases"))
    domain, mailboxes, secrets = copy.deepcopy(CASES["tls-and-aliases"])
    b = yaml.safe_dump_all(render.render(domain, list(reversed(mailboxes)), secrets))
    assert a == b


def test_no_plaintext_password_is_ever_rendered():
    objects = rendered("no-tls")
    text = yaml.safe_dump_all(objects)
    directory = next(o for o in objects if o["kind"] == "Secret")
    decoded = base64.b64decode(directory["data"]["directory.yaml"]).decode()
    assert "plain-password" not in text and "plain-password" not in decoded
    (entry,) = dirmod.parse(decoded).mailboxes
    assert entry.password_hash.startswith("{ARGON2ID}$argon2id$")
    assert passwords.verify(entry.password_hash, "plain-password")


def test_a_hash_in_the_secret_passes_through_unchanged():
    objects = rendered("tls-and-aliases")
    directory = next(o for o in objects if o["metadata"]["name"].endswith("-directory"))
    entries = dirmod.parse(base64.b64decode(directory["data"]["directory.yaml"]).decode()).mailboxes
    assert {e.password_hash for e in entries} == {FAST_HASH}


def test_every_child_is_owned_by_the_maildomain_and_labelled():
    for obj in rendered("no-tls"):
        meta = obj["metadata"]
        assert meta["namespace"] == "mail"
        (owner,) = meta["ownerReferences"]
        assert owner["uid"] == UID and owner["kind"] == "MailDomain" and owner["controller"] is True
        for label in ("name", "instance", "component", "part-of", "managed-by"):
            assert f"app.kubernetes.io/{label}" in meta["labels"], (obj["kind"], label)


def test_pods_run_restricted():
    workloads = [o for o in rendered("no-tls") if o["kind"] in ("Deployment", "StatefulSet")]
    assert {o["metadata"]["name"] for o in workloads} == {"example-com-relay", "example-com-queue",
                                                          "example-com-mailstore", "example-com-autoconfig"}
    for w in workloads:
        pod = w["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        (c,) = pod["containers"]
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert all(p["containerPort"] > 1024 for p in c["ports"])
        assert c["livenessProbe"] and c["readinessProbe"] and c["resources"]["requests"]


def test_services_map_the_standard_ports_onto_unprivileged_ones():
    services = {o["metadata"]["name"]: o for o in rendered("no-tls") if o["kind"] == "Service"}
    relay = {p["port"]: p["targetPort"] for p in services["example-com-relay"]["spec"]["ports"]}
    assert relay == {25: 2525, 587: 2587, 465: 2465}
    store = {p["port"]: p["targetPort"] for p in services["example-com-mailstore"]["spec"]["ports"]}
    assert store == {143: 2143, 993: 2993, 110: 2110, 995: 2995, 4190: 2419}
    autoconfig = {p["port"]: p["targetPort"] for p in services["example-com-autoconfig"]["spec"]["ports"]}
    assert autoconfig == {80: 2080}


@pytest.mark.parametrize("policy,expected", [("Retain", "Retain"), ("Delete", "Delete")])
def test_volume_retention_follows_reclaim_policy(policy, expected):
    objects = render.render(maildomain(reclaimPolicy=policy), [], {})
    for sts in (o for o in objects if o["kind"] == "StatefulSet"):
        assert sts["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == expected
        assert sts["spec"]["volumeClaimTemplates"]


def test_network_policies_cover_every_component():
    pols = [o for o in rendered("no-tls") if o["kind"] == "NetworkPolicy"]
    assert {p["metadata"]["labels"]["app.kubernetes.io/component"] for p in pols} == {
        "relay", "queue", "mailstore", "autoconfig"}
    mailstore = next(p for p in pols if p["metadata"]["name"].endswith("mailstore"))
    # The mailstore talks only to the queue (mail rules send replies and redirects through it) and DNS.
    assert mailstore["spec"]["egress"][0] == {
        "to": [{"podSelector": {"matchLabels": {"app.kubernetes.io/instance": "example-com",
                                                "app.kubernetes.io/component": "queue",
                                                "app.kubernetes.io/name": "correo"}}}],
        "ports": [{"protocol": "TCP", "port": 2424}]}
    assert [rule.get("ports") for rule in mailstore["spec"]["egress"][1:]] == [
        [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]]
    autoconfig = next(p for p in pols if p["metadata"]["name"].endswith("autoconfig"))
    assert autoconfig["spec"]["egress"] == []  # talks to nobody


def test_the_configmap_is_the_configuration_the_servers_read():
    objects = rendered("tls-and-aliases")
    cm = next(o for o in objects if o["kind"] == "ConfigMap")
    cfg = cfgmod.parse(cm["data"]["correo.yaml"])
    assert cfg.hostname == "mail.example.com"
    (dom,) = cfg.domains
    assert dom.aliases == ("example.net", "example.org")
    assert dom.smarthost.host == "smtp.relay.test" and dom.smarthost.password_file == "smarthost/password"
    assert cfg.tls is not None
    assert cfg.relay.queue.host == "example-com-queue.mail.svc"
    # A projected volume puts every file where correo.yaml says it is.
    queue = next(o for o in objects if o["metadata"]["name"] == "example-com-queue" and o["kind"] == "StatefulSet")
    sources = queue["spec"]["template"]["spec"]["volumes"][0]["projected"]["sources"]
    paths = {i["path"] for s in sources for v in s.values() for i in v["items"]}
    assert {"correo.yaml", "directory.yaml", "smarthost/username", "smarthost/password"} <= paths


def test_a_mailbox_change_only_changes_the_directory_secret():
    domain, mailboxes, secrets = CASES["no-tls"]
    before = render.render(domain, mailboxes, secrets)
    changed = [dataclasses.replace(mailboxes[0], spec=dataclasses.replace(mailboxes[0].spec, quota="2Gi"))]
    after = render.render(domain, changed, secrets)
    diff = [a["metadata"]["name"] for a, b in zip(before, after) if a != b]
    assert diff == ["example-com-directory"]


def test_a_domain_config_change_rolls_the_pods_through_the_hash_annotation():
    a = render.render(maildomain(), [], {})
    b = render.render(maildomain(relay={"maxRecipients": 5}), [], {})
    hashes = lambda objs: {o["metadata"]["name"]: o["spec"]["template"]["metadata"]["annotations"]["correo.dev/config-hash"]
                           for o in objs if o["kind"] in ("Deployment", "StatefulSet")}
    assert all(hashes(a)[k] != hashes(b)[k] for k in hashes(a))


def test_pods_roll_once_when_the_tls_secret_appears_but_not_on_renewal():
    def hashes(secrets):
        objs = render.render(maildomain(tls={"secretName": "mail-tls"}), [], secrets)
        return {o["spec"]["template"]["metadata"]["annotations"]["correo.dev/config-hash"]
                for o in objs if o["kind"] in ("Deployment", "StatefulSet")}
    waiting = hashes({})
    issued = hashes({"mail-tls": {"data": {"tls.crt": "QQ==", "tls.key": "QQ=="}}})
    renewed = hashes({"mail-tls": {"data": {"tls.crt": "Qg==", "tls.key": "Qg=="}}})
    assert waiting != issued and issued == renewed


@pytest.mark.parametrize("value", ["", "  ", "{BCRYPT}garbage", "{ARGON2ID}$argon2id$broken"])
def test_an_empty_or_mangled_password_renders_a_mailbox_nobody_can_log_in_to(value):
    objects = render.render(maildomain(), [mailbox("alice")], {"pw": secret("pw", value)})
    directory = next(o for o in objects if o["metadata"]["name"].endswith("-directory"))
    (entry,) = dirmod.parse(base64.b64decode(directory["data"]["directory.yaml"]).decode()).mailboxes
    assert entry.password_hash is None
    assert not entry.check_password(value)
