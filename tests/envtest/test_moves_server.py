"""A mailbox move orchestrated by the operator's code against the real API
server: a pin on a recorded Mailbox keeps the directory Secret on the old
shard until the copy is verified, then the pass flips the Secret (server-side
apply of the same object, one entry changed) and later passes keep it; the
Mailbox's status shows ``Moving`` while a shard does not answer, its new
shard after, and the Events say so.  The shards are stand-ins of the move
endpoints (the real ones move mailboxes on ``correo up`` in
tests/scale/test_move_up.py; on this node every pod shares one network, so
two shard pods cannot both listen)."""
from __future__ import annotations

import asyncio
import base64
import json

import yaml
from moveshards import MemoryShard

from correo_operator import opmoves, placement, statuspoll
from correo_operator.kube import Connection, HttpKube
from correo_operator.reconcile import Reconciler

NAME = "acme"
ALICE = "alice@acme.test"


def resources(pin: int | None = None) -> list[dict]:
    spec = {"address": ALICE, "passwordSecretRef": {"name": "pw"}}
    if pin is not None:
        spec["shard"] = pin
    return [{"apiVersion": "correo.dev/v1alpha1", "kind": "MailDomain", "metadata": {"name": NAME},
             "spec": {"domain": "acme.test", "mailstore": {"shards": 3}}},
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "pw"}, "stringData": {"password": "hunter2"}},
            {"apiVersion": "correo.dev/v1alpha1", "kind": "Mailbox", "metadata": {"name": "alice"}, "spec": spec}]


def test_the_operator_flips_the_directory_secret_after_the_copy(kubectl, control_plane, namespace):
    kubectl.run("apply", "--server-side", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(resources()))
    world = {"now": 1000.0}
    shards = {i: MemoryShard(i, world) for i in range(3)}
    moves = opmoves.OperatorMoves(lambda domain, secret, session, pin: shards, grace=60, clock=lambda: world["now"])

    async def passes(n: int = 1) -> None:
        async with HttpKube(Connection.from_kubeconfig(str(control_plane.kubeconfig))) as kube:
            r = Reconciler(kube, after=statuspoll.StatusWriter(lambda url: _none(), moves=moves), debounce=0)
            for _ in range(n):
                await r.run(namespace, NAME)

    def recorded() -> dict[str, int]:
        secret = kubectl.json("get", "secret", f"{NAME}-directory", "-n", namespace)
        return placement.shards_in_directory(base64.b64decode(secret["data"]["directory.yaml"]).decode())

    world["owners"] = recorded  # the stand-ins check the real directory Secret

    def status() -> dict:
        return kubectl.json("get", "mailbox", "alice", "-n", namespace).get("status") or {}

    def moving() -> dict:
        return next(c for c in status()["conditions"] if c["type"] == "Moving")

    asyncio.run(passes())
    was = recorded()[ALICE]
    target = (was + 1) % 3
    shards[was].mail[ALICE] = ["m1", "m2"]
    assert moving()["reason"] == "NotMoving"

    shards[target].up = False
    kubectl.run("apply", "--server-side", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(resources(target)))
    asyncio.run(passes())
    assert recorded()[ALICE] == was and status()["shard"] == was
    assert (moving()["status"], moving()["reason"]) == ("True", "ShardUnavailable")

    shards[target].up = True
    asyncio.run(passes())
    assert recorded()[ALICE] == target and status()["shard"] == target
    assert (moving()["status"], moving()["reason"]) == ("False", "Moved")
    assert shards[target].mail[ALICE] == ["m1", "m2"] and ALICE in shards[was].mail
    secret = kubectl.json("get", "secret", f"{NAME}-directory", "-n", namespace)
    assert secret["metadata"]["ownerReferences"][0]["kind"] == "MailDomain"  # still the MailDomain's child

    world["now"] += 61
    asyncio.run(passes(2))
    assert recorded()[ALICE] == target
    assert ALICE not in shards[was].mail and moving()["reason"] == "NotMoving"
    events = json.loads(kubectl.run("get", "events", "-n", namespace, "-o", "json").stdout)["items"]
    reasons = {e["reason"] for e in events if e["involvedObject"]["name"] == "alice"}
    assert {"ShardUnavailable", "Moved"} <= reasons, reasons
    asyncio.run(moves.close())


async def _none():
    return None
