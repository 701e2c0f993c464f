"""Queue replicas scaled down on the real API server: the operator keeps the
queue StatefulSet's pods while the leaving replica reports it is still
draining (its ``/status`` as ``correo serve queue`` writes it, served by a
stand-in data plane), lists only the staying replicas for the relay at once,
shows the leaving one as draining in the MailDomain status, and shrinks the
StatefulSet once it reports drained."""
from __future__ import annotations

import asyncio

import yaml
from envkit import wait_for

from correo_operator import statuspoll
from correo_operator.kube import Connection, HttpKube
from correo_operator.reconcile import Reconciler
from correo_server import config as cfgmod

NAME = "acme"


def domain(replicas: int) -> dict:
    return {"apiVersion": "correo.dev/v1alpha1", "kind": "MailDomain", "metadata": {"name": NAME},
            "spec": {"domain": "acme.test", "queue": {"replicas": replicas}}}


class DataPlane:
    """Each queue replica's /status; the leaving one's ``drain`` as the drainer reports it."""

    def __init__(self) -> None:
        self.remaining = 5
        self.leaving = False
        self.fetched: list[str] = []

    def queue(self, replica: int, leaving: bool) -> dict:
        doc = {"service": "queue", "ready": True, "time": "2026-12-05T02:00:00Z", "replica": replica,
               "messages": self.remaining if leaving else 1,
               "totals": {"active": 0, "deferred": 0, "delayedNoticesSent": 0, "bounced": 0, "delivered": 3,
                          "oldestDeferredAgeSeconds": 0, "lastErrors": [], "delayed": [], "lastBounces": []},
               "domains": {}, "senders": {}}
        if leaving:
            doc["drain"] = {"leaving": True, "drained": self.remaining == 0, "remaining": self.remaining,
                            "handedOver": 5 - self.remaining, "to": [0]}
        return doc

    async def __call__(self, url: str):
        self.fetched.append(url)
        for i in range(3):
            if f"-queue-{i}." in url:
                return self.queue(i, leaving=i >= 1 and self.leaving)
        return None


def test_the_operator_shrinks_the_queue_only_after_the_leaving_replica_drained(kubectl, control_plane, namespace):
    kubectl.run("apply", "--server-side", "-n", namespace, "-f", "-", input=yaml.safe_dump(domain(1)))
    plane = DataPlane()

    async def first() -> None:
        async with HttpKube(Connection.from_kubeconfig(str(control_plane.kubeconfig))) as kube:
            await Reconciler(kube, after=statuspoll.StatusWriter(plane), debounce=0).run(namespace, NAME)
    asyncio.run(first())  # one queue first, then three: scaled up in place
    uid = kubectl.json("get", "statefulset", f"{NAME}-queue", "-n", namespace)["metadata"]["uid"]
    kubectl.run("apply", "--server-side", "-n", namespace, "-f", "-", input=yaml.safe_dump(domain(3)))

    async def passes(n: int = 1) -> None:
        async with HttpKube(Connection.from_kubeconfig(str(control_plane.kubeconfig))) as kube:
            r = Reconciler(kube, after=statuspoll.StatusWriter(plane), debounce=0)
            for _ in range(n):
                await r.run(namespace, NAME)

    def sts_replicas() -> int:
        return kubectl.json("get", "statefulset", f"{NAME}-queue", "-n", namespace)["spec"]["replicas"]

    def listed() -> list[str]:
        cm = kubectl.json("get", "configmap", f"{NAME}-config", "-n", namespace)
        return [r.host for r in cfgmod.parse(cm["data"]["correo.yaml"]).queue.replicas]

    asyncio.run(passes())
    assert sts_replicas() == 3 and len(listed()) == 3

    # One replica wanted: replicas 1 and 2 are leaving and still hold mail.
    kubectl.run("apply", "--server-side", "-n", namespace, "-f", "-", input=yaml.safe_dump(domain(1)))
    plane.leaving = True
    asyncio.run(passes(2))
    assert sts_replicas() == 3  # kept while they drain
    # the relay sends to replica 0 alone at once; pods 1 and 2 find themselves past the list: leaving
    assert listed() == [f"{NAME}-queue-0.{NAME}-queue.{namespace}.svc"]
    for i in (1, 2):
        assert any(f"{NAME}-queue-{i}.{NAME}-queue.{namespace}.svc:8082/status" in u for u in plane.fetched)
    status = wait_for(lambda: kubectl.json("get", "md", NAME, "-n", namespace).get("status", {}).get("queueReplicas"),
                      what="status.queueReplicas")
    assert [(r["replica"], r["draining"], r["messages"]) for r in status] == [(0, False, 1), (1, True, 5),
                                                                             (2, True, 5)]
    cond = next(c for c in kubectl.json("get", "md", NAME, "-n", namespace)["status"]["conditions"]
                if c["type"] == "QueueAvailable")
    assert cond["status"] == "True" and "Replica(s) 1, 2 are draining" in cond["message"]

    # Drained: the next pass shrinks the StatefulSet (one queue as before); its volumes stay (whenScaled: Retain).
    plane.remaining = 0
    asyncio.run(passes())
    assert sts_replicas() == 1 and listed() == []
    sts = kubectl.json("get", "statefulset", f"{NAME}-queue", "-n", namespace)
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"]["whenScaled"] == "Retain"
    assert sts["metadata"]["uid"] == uid  # scaled up and down in place, never recreated
