"""The operator moves a mailbox between shards (API double): a pin on a
recorded Mailbox keeps the directory Secret on the old shard (``Moving``),
one pass fences, copies and flips the directory Secret to the new shard
(render keeps it on later passes), the Mailbox's status says ``Moving`` with
the step while a shard does not answer and its new shard after; the old
copy goes after the grace.  The shards here are in-memory stand-ins of the
move endpoints (the real ones are moved on ``correo up`` in
tests/scale/test_move_up.py)."""
from __future__ import annotations

import base64
import copy

from moveshards import MemoryShard
from opkit import NS, FakeDataPlane, mailbox, maildomain, password_secret

from correo_operator import opmoves, placement, statuspoll
from correo_operator.reconcile import Reconciler

DOMAIN = "example-com"
PEOPLE = [f"user{i}" for i in range(6)]


def recorded(store) -> dict[str, int]:
    secret = store.one("Secret", NS, f"{DOMAIN}-directory")
    return placement.shards_in_directory(base64.b64decode(secret["data"]["directory.yaml"]).decode())


def condition(store, name: str, type_: str) -> dict:
    return next(c for c in store.one("Mailbox", NS, name)["status"]["conditions"] if c["type"] == type_)


async def test_the_operator_moves_a_pinned_mailbox_and_flips_the_directory_secret(store, kube, clock):
    world = {"now": 1000.0}
    shards = {i: MemoryShard(i, world) for i in range(3)}
    world["owners"] = lambda: recorded(store)
    moves = opmoves.OperatorMoves(lambda domain, secret, session, pin: shards, grace=60, clock=lambda: world["now"])
    r = Reconciler(kube, after=statuspoll.StatusWriter(FakeDataPlane(), clock=clock, moves=moves), debounce=0)
    store.put(maildomain(DOMAIN, mailstore={"shards": 3}))
    for name in PEOPLE:
        store.put(password_secret(f"{name}-password", f"pw-{name}"))
        store.put(mailbox(name, f"{name}@example.com"))
    await r.run(NS, DOMAIN)
    before = recorded(store)
    name = PEOPLE[0]
    address = f"{name}@example.com"
    src = before[address]
    dst = (src + 1) % 3
    shards[src].mail[address] = ["m1", "m2", "m3"]
    assert condition(store, name, "Moving")["reason"] == "NotMoving"

    # the target does not answer: the directory stays, the Mailbox says why
    shards[dst].up = False
    box = copy.deepcopy(store.one("Mailbox", NS, name))
    box["spec"]["shard"] = dst
    box["metadata"]["generation"] = box["metadata"].get("generation", 1) + 1
    store.put(box)
    await r.run(NS, DOMAIN)
    assert recorded(store)[address] == src
    moving = condition(store, name, "Moving")
    assert (moving["status"], moving["reason"]) == ("True", "ShardUnavailable")
    assert f"shard {dst}, which is to take it, does not answer" in moving["message"]
    assert (condition(store, name, "Placed")["reason"], store.one("Mailbox", NS, name)["status"]["shard"]) \
        == ("Moving", src)

    # it answers: one pass fences, copies, flips the Secret
    shards[dst].up = True
    await r.run(NS, DOMAIN)
    assert recorded(store)[address] == dst
    assert {a: s for a, s in recorded(store).items() if a != address} == \
        {a: s for a, s in before.items() if a != address}
    assert shards[dst].mail[address] == ["m1", "m2", "m3"]
    status = store.one("Mailbox", NS, name)["status"]
    assert status["shard"] == dst
    assert (condition(store, name, "Moving")["status"], condition(store, name, "Moving")["reason"]) == ("False", "Moved")
    assert (condition(store, name, "Placed")["reason"]) == "Pinned"
    assert address in shards[src].mail  # kept for the grace

    # later passes keep the new owner; after the grace the old copy goes
    world["now"] += 61
    await r.run(NS, DOMAIN)
    await r.run(NS, DOMAIN)
    assert recorded(store)[address] == dst
    assert address not in shards[src].mail and not shards[dst].imported
    assert condition(store, name, "Moving")["reason"] == "NotMoving"
    events = [(e["reason"], e["message"]) for e in store.find("Event", NS) if e["involvedObject"]["name"] == name]
    assert any(reason == "ShardUnavailable" for reason, _ in events), events
    await moves.close()


async def test_a_move_the_target_cannot_take_never_fences_the_mailbox(store, kube, clock):
    world = {"now": 1000.0, "blocked": "this shard already holds mail for it that no move put here"}
    shards = {i: MemoryShard(i, world) for i in range(3)}
    world["owners"] = lambda: recorded(store)
    moves = opmoves.OperatorMoves(lambda domain, secret, session, pin: shards, clock=lambda: world["now"])
    r = Reconciler(kube, after=statuspoll.StatusWriter(FakeDataPlane(), clock=clock, moves=moves), debounce=0)
    store.put(maildomain(DOMAIN, mailstore={"shards": 3}))
    store.put(password_secret("user0-password", "pw-user0"))
    store.put(mailbox("user0", "user0@example.com", shard=None))
    await r.run(NS, DOMAIN)
    src = recorded(store)["user0@example.com"]
    box = copy.deepcopy(store.one("Mailbox", NS, "user0"))
    box["spec"]["shard"] = (src + 1) % 3
    store.put(box)
    await r.run(NS, DOMAIN)
    moving = condition(store, "user0", "Moving")
    assert (moving["status"], moving["reason"]) == ("True", "Blocked") and "no move put here" in moving["message"]
    assert not shards[src].fenced and recorded(store)["user0@example.com"] == src
    world["blocked"] = ""  # the administrator moved the folder aside
    await r.run(NS, DOMAIN)
    assert recorded(store)["user0@example.com"] == (src + 1) % 3
    await moves.close()
