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


def placed(store, name: str) -> dict:
    return next(c for c in store.one("Mailbox", NS, name)["status"]["conditions"] if c["type"] == "Placed")


def warnings(store, name: str) -> list[tuple[str, str]]:
    return [(e["reason"], e["message"]) for e in store.find("Event", NS)
            if e["involvedObject"]["name"] == name and e["type"] == "Warning"]


async def test_a_pin_that_cannot_be_honoured_says_why_on_the_mailbox_until_it_is_settled(store, kube, clock):
    store.put(maildomain(DOMAIN, mailstore={"shards": 5}))
    for name in PEOPLE:
        store.put(password_secret(f"{name}-password", f"pw-{name}"))
        store.put(mailbox(name, f"{name}@example.com"))
    store.put(password_secret("pinned-password", "pw-pinned"))
    store.put(mailbox("pinned", "pinned@example.com", shard=7))
    r = reconciler(kube, clock)
    await r.run(NS, DOMAIN)
    recorded = shards_recorded(store)

    # A pin naming no shard: placed by hashing, and the Mailbox says why.
    cond = placed(store, "pinned")
    assert (cond["status"], cond["reason"]) == ("False", "PinOutOfRange")
    assert "spec.shard 7 does not exist (the MailDomain has 5 shard(s), 0 to 4)" in cond["message"]
    assert ("PinOutOfRange", cond["message"]) in warnings(store, "pinned")
    assert {(placed(store, n)["status"], placed(store, n)["reason"]) for n in PEOPLE} == {("True", "Hashed")}

    # Down to 2 shards: a mailbox that was on shard 2..4 is re-placed, and it
    # keeps saying where its earlier mail is through later passes.
    on_gone = next(n for n in PEOPLE if recorded[f"{n}@example.com"] >= 2)
    was = recorded[f"{on_gone}@example.com"]
    domain = copy.deepcopy(store.one("MailDomain", NS, DOMAIN))
    domain["spec"]["mailstore"]["shards"] = 2
    store.put(domain)
    for _ in range(2):
        await r.run(NS, DOMAIN)
        cond = placed(store, on_gone)
        assert (cond["status"], cond["reason"]) == ("False", "ShardRemoved")
        assert f"shard {was} no longer exists" in cond["message"]
        assert f"set spec.shard: {was}" in cond["message"]
    assert store.one("Mailbox", NS, on_gone)["status"]["shard"] in (0, 1)
    stayed = next(n for n in PEOPLE if recorded[f"{n}@example.com"] < 2)
    assert (placed(store, stayed)["status"], placed(store, stayed)["reason"]) == ("True", "Recorded")

    # The owner settles it: shards back up and the pin the message names.
    domain = copy.deepcopy(store.one("MailDomain", NS, DOMAIN))
    domain["spec"]["mailstore"]["shards"] = 5
    store.put(domain)
    box = copy.deepcopy(store.one("Mailbox", NS, on_gone))
    box["spec"]["shard"] = was
    box["metadata"]["generation"] = box["metadata"].get("generation", 1) + 1
    store.put(box)
    await r.run(NS, DOMAIN)
    cond = placed(store, on_gone)
    # the pin starts a move (correo_operator.moves): the interim shard owns it until its mail is copied
    interim = store.one("Mailbox", NS, on_gone)["status"]["shard"]
    assert (cond["status"], cond["reason"]) == ("True", "Moving") and interim != was
    assert f"pinned to shard {was} by spec.shard: moving there from shard {interim}" in cond["message"]
