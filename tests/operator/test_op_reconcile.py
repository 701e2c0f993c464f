"""Reconciling a MailDomain against the API double: children, owners, changes,
drift, pruning, missing Secrets, and the promise of zero writes when nothing changed."""
from __future__ import annotations

import asyncio
import base64

import pytest
import yaml
from opkit import NS, FakeDataPlane, make_ready, mailbox, maildomain, password_secret

from correo_operator import kube as kubemod
from correo_operator import reconcile, render, statuspoll
from correo_operator.model import MailDomain
from correo_operator.reconcile import Reconciler

DOMAIN = "example-com"


def setup_domain(store, *, mailboxes=("alice", "bob"), **spec) -> dict:
    domain = store.put(maildomain(DOMAIN, **spec))
    for name in mailboxes:
        store.put(password_secret(f"{name}-password", f"secret-of-{name}"))
        store.put(mailbox(name, f"{name}@example.com"))
    return domain


def reconciler(kube, clock, dataplane=None) -> Reconciler:
    return Reconciler(kube, after=statuspoll.StatusWriter(dataplane or FakeDataPlane(), clock=clock), debounce=0)


def directory(store) -> dict[str, dict]:
    secret = store.one("Secret", NS, f"{DOMAIN}-directory")
    text = base64.b64decode(secret["data"]["directory.yaml"]).decode()
    return {m["address"]: m for m in yaml.safe_load(text)["mailboxes"]}


def children(store) -> dict[tuple[str, str], dict]:
    out = {}
    for kind in ("ConfigMap", "Secret", "Service", "Deployment", "StatefulSet", "PodDisruptionBudget",
                 "NetworkPolicy"):
        for obj in store.find(kind, NS):
            if (obj["metadata"].get("labels") or {}).get("app.kubernetes.io/instance") == DOMAIN:
                out[(kind, obj["metadata"]["name"])] = obj
    return out


class TestCreate:
    async def test_a_domain_with_two_mailboxes_gets_every_child_owned_by_it(self, store, kube, clock):
        domain = setup_domain(store)
        outcome = await reconciler(kube, clock).run(NS, DOMAIN)

        expected = {(o["kind"], o["metadata"]["name"])
                    for o in render.render(MailDomain.from_object(domain), [], {})} | {("Secret", f"{DOMAIN}-dkim"),
                                                                             ("Secret", f"{DOMAIN}-srs")}
        found = children(store)
        assert set(found) == expected
        assert {"Deployment", "StatefulSet", "Service", "ConfigMap", "Secret", "PodDisruptionBudget",
                "NetworkPolicy"} == {k for k, _ in found}
        for (kind, name), obj in found.items():
            owners = obj["metadata"]["ownerReferences"]
            assert owners == [{"apiVersion": "correo.dev/v1alpha1", "kind": "MailDomain", "name": DOMAIN,
                               "uid": domain["metadata"]["uid"], "controller": True,
                               "blockOwnerDeletion": True}], (kind, name)
            assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "correo"
        assert set(directory(store)) == {"alice@example.com", "bob@example.com"}
        assert len(outcome.applied) == len(expected) - 2  # the DKIM and SRS Secrets are created, not applied

    async def test_children_are_applied_by_the_correo_field_manager(self, store, kube, clock):
        setup_domain(store)
        await reconciler(kube, clock).run(NS, DOMAIN)
        relay = store.one("Deployment", NS, f"{DOMAIN}-relay")
        managers = {(m["manager"], m["operation"]) for m in relay["metadata"]["managedFields"]}
        assert ("correo", "Apply") in managers
        applies = [r for r in store.requests if r.verb == "patch" and r.resource == "deployments"]
        assert applies and all(r.manager == "correo" for r in applies)

    async def test_the_directory_holds_hashes_never_the_passwords(self, store, kube, clock, capsys):
        store.put(maildomain(DOMAIN, domain="example.com"))
        store.put({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "carol-password", "namespace": NS},
                   "stringData": {"password": "plain-text-hunter2"}})
        store.put(mailbox("carol", "carol@example.com"))
        await reconciler(kube, clock).run(NS, DOMAIN)
        entry = directory(store)["carol@example.com"]
        assert entry["passwordHash"].startswith("{ARGON2ID}")
        for kind in ("ConfigMap", "Secret"):
            for obj in store.find(kind, NS):
                if obj["metadata"]["name"] == "carol-password":
                    continue
                values = (obj.get("data") or {}).values()
                if kind == "Secret":
                    values = [base64.b64decode(v).decode(errors="replace") for v in values]
                blob = str(obj) + "".join(values)
                assert "plain-text-hunter2" not in blob, obj["metadata"]["name"]
        assert "plain-text-hunter2" not in capsys.readouterr().out


class TestChanges:
    async def test_changing_a_mailbox_changes_only_the_directory_secret(self, store, kube, clock):
        setup_domain(store)
        r = reconciler(kube, clock)
        await r.run(NS, DOMAIN)
        before = {k: o["metadata"]["resourceVersion"] for k, o in children(store).items()}
        mark = len(store.requests)

        store.edit("Mailbox", NS, "bob", {"spec": {"quota": "2Gi", "aliases": ["builder@example.com"]}})
        outcome = await r.run(NS, DOMAIN)

        assert outcome.applied == [("Secret", NS, f"{DOMAIN}-directory")]
        after = {k: o["metadata"]["resourceVersion"] for k, o in children(store).items()}
        assert {k for k in before if before[k] != after[k]} == {("Secret", f"{DOMAIN}-directory")}
        child_writes = [w for w in store.writes(since=mark) if not w.resource.endswith("/status")
                        and w.resource != "events"]
        assert [(w.verb, w.resource, w.name) for w in child_writes] == [("patch", "secrets", f"{DOMAIN}-directory")]
        bob = directory(store)["bob@example.com"]
        assert bob["quotaBytes"] == 2 << 30 and bob["aliases"] == ["builder@example.com"]

    async def test_a_new_mailbox_joins_the_directory_and_a_foreign_one_does_not(self, store, kube, clock):
        setup_domain(store)
        r = reconciler(kube, clock)
        await r.run(NS, DOMAIN)
        store.put(password_secret("carol-password", "x"))
        store.put(mailbox("carol", "carol@example.com"))
        store.put(mailbox("dave", "dave@other.org", secret="carol-password"))
        await r.run(NS, DOMAIN)
        assert set(directory(store)) == {"alice@example.com", "bob@example.com", "carol@example.com"}

    async def test_a_mailbox_that_does_not_fit_the_api_holds_up_no_other(self, store, kube, clock, capsys):
        setup_domain(store)
        store.put(mailbox("odd", "odd@example.com", keepCopy="yes"))  # as if stored under an older CRD
        await reconciler(kube, clock).run(NS, DOMAIN)
        assert set(directory(store)) == {"alice@example.com", "bob@example.com"}
        out = capsys.readouterr().out
        assert "does not fit the API" in out and "spec.keepCopy" in out and "odd" in out

    async def test_a_mailbox_in_an_alias_domain_belongs_to_the_domain(self, store, kube, clock):
        setup_domain(store, aliasDomains=["example.net"])
        store.put(password_secret("erin-password", "x"))
        store.put(mailbox("erin", "erin@example.net"))
        await reconciler(kube, clock).run(NS, DOMAIN)
        assert "erin@example.net" in directory(store)

    async def test_a_changed_password_secret_changes_the_directory(self, store, kube, clock):
        setup_domain(store)
        r = reconciler(kube, clock)
        await r.run(NS, DOMAIN)
        old_hash = directory(store)["alice@example.com"]["passwordHash"]
        store.put(password_secret("alice-password", "a-new-password"))
        outcome = await r.run(NS, DOMAIN)
        assert outcome.applied == [("Secret", NS, f"{DOMAIN}-directory")]
        assert directory(store)["alice@example.com"]["passwordHash"] != old_hash
        assert r.domains_using_secret(NS, "alice-password") == {(NS, DOMAIN)}

    async def test_a_domain_change_rolls_the_workloads_and_bumps_their_generation(self, store, kube, clock):
        setup_domain(store)
        r = reconciler(kube, clock)
        await r.run(NS, DOMAIN)
        gen = store.one("Deployment", NS, f"{DOMAIN}-relay")["metadata"]["generation"]
        store.edit("MailDomain", NS, DOMAIN, {"spec": {"relay": {"replicas": 3, "maxRecipients": 50}}})
        outcome = await r.run(NS, DOMAIN)
        relay = store.one("Deployment", NS, f"{DOMAIN}-relay")
        assert relay["spec"]["replicas"] == 3 and relay["metadata"]["generation"] == gen + 1
        assert ("ConfigMap", NS, f"{DOMAIN}-config") in outcome.applied


class TestDrift:
    async def test_a_deleted_child_comes_back(self, store, kube, clock):
        setup_domain(store)
        r = reconciler(kube, clock)
        await r.run(NS, DOMAIN)
        old_uid = store.one("StatefulSet", NS, f"{DOMAIN}-queue")["metadata"]["uid"]
        store.remove("StatefulSet", NS, f"{DOMAIN}-queue")
        store.remove("Service", NS, f"{DOMAIN}-relay")
        outcome = await r.run(NS, DOMAIN)
        assert sorted(outcome.applied) == [("Service", NS, f"{DOMAIN}-relay"), ("StatefulSet", NS, f"{DOMAIN}-queue")]
        queue = store.one("StatefulSet", NS, f"{DOMAIN}-queue")
        assert queue is not None and queue["metadata"]["uid"] != old_uid

    async def test_a_field_edited_by_hand_is_put_back(self, store, kube, clock):
        setup_domain(store)
        r = reconciler(kube, clock)
        await r.run(NS, DOMAIN)
        store.edit("Deployment", NS, f"{DOMAIN}-relay", {"spec": {"replicas": 7}})
        store.edit("ConfigMap", NS, f"{DOMAIN}-config", {"data": {"correo.yaml": "broken: true\n"}})
        outcome = await r.run(NS, DOMAIN)
        assert sorted(outcome.applied) == [("ConfigMap", NS, f"{DOMAIN}-config"),
                                           ("Deployment", NS, f"{DOMAIN}-relay")]
        assert store.one("Deployment", NS, f"{DOMAIN}-relay")["spec"]["replicas"] == 2
        assert "broken" not in store.one("ConfigMap", NS, f"{DOMAIN}-config")["data"]["correo.yaml"]

    async def test_fields_of_other_managers_and_server_defaults_cause_no_write(self, store, kube, clock):
        setup_domain(store)
        r = reconciler(kube, clock)
        await r.run(NS, DOMAIN)
        # What others add: an annotation by a tool, defaults by the API server, status by controllers.
        store.edit("Deployment", NS, f"{DOMAIN}-relay", {
            "metadata": {"annotations": {"deployment.kubernetes.io/revision": "1"}},
            "spec": {"progressDeadlineSeconds": 600, "template": {"spec": {"dnsPolicy": "ClusterFirst"}}}},
            manager="kube-apiserver")
        store.edit("Service", NS, f"{DOMAIN}-relay", {"spec": {"clusterIP": "10.0.0.7", "sessionAffinity": "None"}},
                   manager="kube-apiserver")
        make_ready(store)
        mark = len(store.requests)
        outcome = await reconciler(kube, clock).run(NS, DOMAIN)
        assert outcome.applied == [] and outcome.deleted == []
        assert [w for w in store.writes(since=mark) if w.resource not in ("maildomains/status", "events")] == []
        relay = store.one("Deployment", NS, f"{DOMAIN}-relay")
        assert relay["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"


    async def test_a_new_volume_size_recreates_the_statefulset_keeping_pods_and_volumes(self, store, kube, clock):
        setup_domain(store)
        r = reconciler(kube, clock)
        await r.run(NS, DOMAIN)
        old = store.one("StatefulSet", NS, f"{DOMAIN}-mailstore")
        pod = store.put({"apiVersion": "v1", "kind": "Pod", "metadata": {
            "name": f"{DOMAIN}-mailstore-0", "namespace": NS,
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": f"{DOMAIN}-mailstore",
                                 "uid": old["metadata"]["uid"], "controller": True}]},
            "spec": {"containers": [{"name": "mailstore", "image": "x"}]}})
        store.edit("MailDomain", NS, DOMAIN, {"spec": {"mailstore": {"storage": {"size": "50Gi"}}}})
        outcome = await r.run(NS, DOMAIN)
        new = store.one("StatefulSet", NS, f"{DOMAIN}-mailstore")
        assert new["metadata"]["uid"] != old["metadata"]["uid"]
        assert new["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "50Gi"
        assert ("StatefulSet", NS, f"{DOMAIN}-mailstore") in outcome.applied
        assert store.one("Pod", NS, pod["metadata"]["name"]) is not None, "the pod was orphaned, not deleted"
        deletes = [r for r in store.requests if r.verb == "delete" and r.resource == "statefulsets"]
        assert len(deletes) == 1

    async def test_an_object_the_api_refuses_does_not_hold_back_the_others(self, store, kube, clock):
        setup_domain(store)
        r = reconciler(kube, clock)
        await r.run(NS, DOMAIN)
        store.remove("Deployment", NS, f"{DOMAIN}-relay")
        store.remove("ConfigMap", NS, f"{DOMAIN}-config")
        store.rbac = {(g, res, v) for (g, res), verbs in kubemod.PERMISSIONS.items() for v in verbs} - {
            ("apps", "deployments", "create")}
        with pytest.raises(reconcile.ApplyFailed) as err:
            await r.run(NS, DOMAIN)
        assert "Deployment" in str(err.value)
        assert store.one("ConfigMap", NS, f"{DOMAIN}-config") is not None


class TestNoOp:
    async def test_a_resync_with_nothing_new_makes_zero_api_writes(self, store, kube, clock, dataplane):
        setup_domain(store)
        dataplane.load_mailboxes("alice@example.com", "bob@example.com")
        r = reconciler(kube, clock, dataplane)
        await r.run(NS, DOMAIN)
        make_ready(store)
        await r.run(NS, DOMAIN)  # status catches up with the ready workloads
        mark = len(store.requests)
        for _ in range(3):
            clock.advance(30)
            outcome = await r.run(NS, DOMAIN)
            assert outcome.applied == [] and outcome.deleted == []
        assert store.writes(since=mark) == []
        assert all(req.verb in ("get", "list") for req in store.requests[mark:])

    async def test_concurrent_triggers_share_passes(self, store, kube, clock):
        setup_domain(store)
        r = Reconciler(kube, debounce=0.01)
        results = await asyncio.gather(*(r.run(NS, DOMAIN, trigger="mailbox") for _ in range(25)))
        assert all(res is not None for res in results)
        assert r.passes == 1
        await r.run(NS, DOMAIN)
        assert r.passes == 2  # a call after a pass gets a pass of its own

    async def test_a_pass_after_the_domain_is_gone_does_nothing(self, store, kube, clock):
        assert await reconciler(kube, clock).run(NS, "nothing-here") is None
        assert store.writes() == []


class TestPrune:
    async def test_an_object_no_longer_rendered_is_deleted(self, store, kube, clock):
        setup_domain(store)
        r = reconciler(kube, clock)
        await r.run(NS, DOMAIN)
        assert store.one("Service", NS, f"{DOMAIN}-mailstore") is not None
        store.edit("MailDomain", NS, DOMAIN, {"spec": {"mailstore": {"imap": False, "pop3": False}}})
        outcome = await r.run(NS, DOMAIN)
        assert ("Service", NS, f"{DOMAIN}-mailstore") in outcome.deleted
        assert store.one("Service", NS, f"{DOMAIN}-mailstore") is None
        assert store.one("Secret", NS, f"{DOMAIN}-dkim") is not None  # the key is never pruned

    async def test_objects_not_owned_by_the_domain_are_left_alone(self, store, kube, clock):
        setup_domain(store)
        store.put({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
            "name": "lookalike", "namespace": NS,
            "labels": {"app.kubernetes.io/instance": DOMAIN, "app.kubernetes.io/managed-by": "correo"}},
            "data": {"x": "y"}})
        outcome = await reconciler(kube, clock).run(NS, DOMAIN)
        assert outcome.deleted == [] and store.one("ConfigMap", NS, "lookalike") is not None

    async def test_a_field_correo_stopped_rendering_is_removed_from_the_live_object(self, store, kube):
        """needs_apply sees fields correo applied before, through managedFields."""
        setup_domain(store)
        desired = {"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "c", "namespace": NS, "annotations": {"a": "1", "b": "2"}},
                   "data": {"k": "v"}}
        await kube.apply(desired)
        smaller = {**desired, "metadata": {"name": "c", "namespace": NS, "annotations": {"a": "1"}}}
        live = store.one("ConfigMap", NS, "c")
        assert reconcile.contains(live, {k: v for k, v in smaller.items() if k not in ("apiVersion", "kind")})
        assert reconcile.needs_apply(smaller, live)
        await kube.apply(smaller)
        live = store.one("ConfigMap", NS, "c")
        assert live["metadata"]["annotations"] == {"a": "1"}
        assert not reconcile.needs_apply(smaller, live)


class TestMissingSecrets:
    async def test_a_missing_password_secret_is_a_condition_not_a_crash(self, store, kube, clock, dataplane):
        store.put(maildomain(DOMAIN))
        store.put(mailbox("frank", "frank@example.com", secret="nowhere"))
        dataplane.load_mailboxes("frank@example.com")
        outcome = await reconciler(kube, clock, dataplane).run(NS, DOMAIN)
        assert "nowhere" in outcome.inputs.missing_secrets
        frank = store.one("Mailbox", NS, "frank")
        ready = {c["type"]: c for c in frank["status"]["conditions"]}["Ready"]
        assert (ready["status"], ready["reason"]) == ("False", "PasswordSecretMissing")
        assert "nowhere" in ready["message"]
        assert "passwordHash" not in directory(store)["frank@example.com"]

    async def test_a_missing_tls_secret_makes_the_domain_not_ready_with_a_reason(self, store, kube, clock, dataplane):
        store.put(maildomain(DOMAIN, tls={"secretName": "mail-tls"}))
        r = reconciler(kube, clock, dataplane)
        await r.run(NS, DOMAIN)
        make_ready(store)
        await r.run(NS, DOMAIN)
        ready = {c["type"]: c for c in store.one("MailDomain", NS, DOMAIN)["status"]["conditions"]}["Ready"]
        assert (ready["status"], ready["reason"]) == ("False", "SecretMissing")
        assert "mail-tls" in ready["message"]
        # The Secret appears (cert-manager issued it): the next pass is Ready.
        store.put({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                   "metadata": {"name": "mail-tls", "namespace": NS},
                   "stringData": {"tls.crt": "cert", "tls.key": "key"}})
        await r.run(NS, DOMAIN)
        ready = {c["type"]: c for c in store.one("MailDomain", NS, DOMAIN)["status"]["conditions"]}["Ready"]
        assert ready["status"] == "True"


@pytest.mark.parametrize("live,desired,expected", [
    ({"a": 1, "b": 2}, {"a": 1}, True),
    ({"a": [{"x": 1, "y": 2}]}, {"a": [{"x": 1}]}, True),
    ({"a": [{"x": 1}]}, {"a": [{"x": 1}, {"x": 2}]}, False),
    ({"a": True}, {"a": 1}, False),
    ({"a": {"b": "c"}}, {"a": {"b": "d"}}, False),
])
def test_contains_compares_only_what_is_desired(live, desired, expected):
    assert reconcile.contains(live, desired) is expected
