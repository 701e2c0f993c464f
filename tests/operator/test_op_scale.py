"""The operator and mailstore shards (API double): the proxy credential is
generated once and kept, every Mailbox gets a shard recorded in the directory
Secret, and raising ``spec.mailstore.shards`` moves no mailbox."""
from __future__ import annotations

import base64
import copy

import yaml
from opkit import NS, FakeDataPlane, mailbox, maildomain, password_secret

from correo_operator import placement, statuspoll
from correo_operator.reconcile import Reconciler

DOMAIN = "example-com"
PEOPLE = [f"user{i}" for i in range(12)]


def reconciler(kube, clock) -> Reconciler:
    return Reconciler(kube, after=statuspoll.StatusWriter(FakeDataPlane(), clock=clock), debounce=0)


def shards_recorded(store) -> dict[str, int]:
    secret = store.one("Secret", NS, f"{DOMAIN}-directory")
    return placement.shards_in_directory(base64.b64decode(secret["data"]["directory.yaml"]).decode())


def proxy_secret(store) -> str:
    return base64.b64decode(store.one("Secret", NS, f"{DOMAIN}-proxy")["data"]["proxy.secret"]).decode()


async def test_a_sharded_domain_gets_a_proxy_credential_once_and_mailboxes_spread_over_its_shards(store, kube, clock):
    store.put(maildomain(DOMAIN, mailstore={"shards": 3}))
    for name in PEOPLE:
        store.put(password_secret(f"{name}-password", f"pw-{name}"))
        store.put(mailbox(name, f"{name}@example.com"))
    await reconciler(kube, clock).run(NS, DOMAIN)
    first = proxy_secret(store)
    assert len(first) == 64 and int(first, 16)
    recorded = shards_recorded(store)
    assert set(recorded.values()) == {0, 1, 2}
    assert store.one("StatefulSet", NS, f"{DOMAIN}-mailstore")["spec"]["replicas"] == 3
    assert store.one("Deployment", NS, f"{DOMAIN}-proxy") is not None

    await reconciler(kube, clock).run(NS, DOMAIN)  # a second pass keeps the credential
    assert proxy_secret(store) == first

    # Five shards now: every mailbox stays where its mail is.
    domain = copy.deepcopy(store.one("MailDomain", NS, DOMAIN))
    domain["spec"]["mailstore"]["shards"] = 5
    store.put(domain)
    store.put(password_secret("late-password", "pw-late"))
    store.put(mailbox("late", "late@example.com"))
    await reconciler(kube, clock).run(NS, DOMAIN)
    after = shards_recorded(store)
    assert {a: after[a] for a in recorded} == recorded
    assert after["late@example.com"] == placement.rendezvous("late@example.com", 5)
    assert store.one("StatefulSet", NS, f"{DOMAIN}-mailstore")["spec"]["replicas"] == 5
    assert proxy_secret(store) == first
