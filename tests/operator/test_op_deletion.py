"""Deleting a MailDomain (the finalizer honours reclaimPolicy) and a Mailbox."""
from __future__ import annotations

import base64

import yaml
from opkit import NS, FakeDataPlane, mailbox, maildomain, password_secret

from correo_operator import deletion, statuspoll
from correo_operator.model import MailDomain, Mailbox
from correo_operator.reconcile import Reconciler

DOMAIN = "example-com"


async def running_domain(store, kube, clock, **spec) -> Reconciler:
    domain = maildomain(DOMAIN, **spec)
    domain["metadata"]["finalizers"] = [deletion.FINALIZER]  # as kopf adds it
    store.put(domain)
    for name in ("alice", "bob"):
        store.put(password_secret(f"{name}-password", name))
        store.put(mailbox(name, f"{name}@example.com"))
    r = Reconciler(kube, after=statuspoll.StatusWriter(FakeDataPlane(), clock=clock), debounce=0)
    await r.run(NS, DOMAIN)
    # What the StatefulSet controller does: one claim per volumeClaimTemplate and pod,
    # labelled with the template's labels and the selector.
    for sts_name in (f"{DOMAIN}-queue", f"{DOMAIN}-mailstore"):
        sts = store.one("StatefulSet", NS, sts_name)
        for tmpl in sts["spec"]["volumeClaimTemplates"]:
            labels = {**tmpl["metadata"]["labels"], **sts["spec"]["selector"]["matchLabels"]}
            store.put({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                       "metadata": {"name": f"{tmpl['metadata']['name']}-{sts_name}-0", "namespace": NS,
                                    "labels": labels}, "spec": tmpl["spec"]})
    # Someone's own claim that happens to carry the instance label.
    store.put({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
               "metadata": {"name": "backup-of-example-com", "namespace": NS,
                            "labels": {"app.kubernetes.io/instance": DOMAIN}},
               "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
    return r


def claims(store) -> set[str]:
    return {c["metadata"]["name"] for c in store.find("PersistentVolumeClaim", NS)}


def events(store, reason: str) -> list[dict]:
    return [e for e in store.find("Event", NS) if e["reason"] == reason]


async def delete_domain(store, kube) -> None:
    """kubectl delete, then what kopf does: run the delete handler, drop the finalizer."""
    store.remove("MailDomain", NS, DOMAIN)
    domain = store.one("MailDomain", NS, DOMAIN)
    assert domain["metadata"]["deletionTimestamp"]  # held by the finalizer
    await deletion.finalize_domain(kube, MailDomain.from_object(domain))
    store.edit("MailDomain", NS, DOMAIN, {"metadata": {"finalizers": None}}, manager="kopf")


class TestReclaimPolicy:
    async def test_retain_keeps_the_volumes_and_says_so(self, store, kube, clock):
        await running_domain(store, kube, clock)
        await delete_domain(store, kube)

        assert store.one("MailDomain", NS, DOMAIN) is None
        assert claims(store) == {f"spool-{DOMAIN}-queue-0", f"mail-{DOMAIN}-mailstore-0", "backup-of-example-com"}
        for kind in ("Deployment", "StatefulSet", "Service", "ConfigMap", "NetworkPolicy", "PodDisruptionBudget"):
            assert store.find(kind, NS) == [], f"{kind} should go with its owner"
        assert {s["metadata"]["name"] for s in store.find("Secret", NS)} == {"alice-password", "bob-password"}
        (event,) = events(store, "VolumesRetained")
        assert event["involvedObject"]["name"] == DOMAIN and event["type"] == "Normal"
        assert f"spool-{DOMAIN}-queue-0" in event["message"] and f"mail-{DOMAIN}-mailstore-0" in event["message"]
        assert not [r for r in store.requests if r.verb == "delete" and r.resource == "persistentvolumeclaims"]

    async def test_delete_removes_the_volumes_and_only_those(self, store, kube, clock):
        await running_domain(store, kube, clock, reclaimPolicy="Delete")
        await delete_domain(store, kube)

        assert claims(store) == {"backup-of-example-com"}
        (event,) = events(store, "VolumesDeleted")
        assert "2 volume claim(s)" in event["message"]
        assert store.find("StatefulSet", NS) == []

    async def test_a_domain_being_deleted_is_not_reconciled_any_more(self, store, kube, clock):
        r = await running_domain(store, kube, clock)
        store.remove("MailDomain", NS, DOMAIN)
        store.remove("Deployment", NS, f"{DOMAIN}-relay")
        mark = len(store.requests)
        assert await r.run(NS, DOMAIN) is None
        assert store.writes(since=mark) == []
        assert store.one("Deployment", NS, f"{DOMAIN}-relay") is None


class TestMailboxDeletion:
    async def test_a_deleted_mailbox_leaves_the_directory_and_an_event_says_where_its_mail_is(
            self, store, kube, clock):
        r = await running_domain(store, kube, clock)
        bob = store.one("Mailbox", NS, "bob")
        store.remove("Mailbox", NS, "bob")
        await deletion.mailbox_removed(r, Mailbox.from_object(bob), (NS, DOMAIN))

        secret = store.one("Secret", NS, f"{DOMAIN}-directory")
        entries = yaml.safe_load(base64.b64decode(secret["data"]["directory.yaml"]))["mailboxes"]
        assert [e["address"] for e in entries] == ["alice@example.com"]
        (event,) = events(store, "MailboxRemoved")
        assert "bob@example.com" in event["message"] and "stays on the mailstore volume" in event["message"]
        assert claims(store) >= {f"mail-{DOMAIN}-mailstore-0"}
