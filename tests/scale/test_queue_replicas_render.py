"""Queue replicas as rendered and reported: the StatefulSet with N pods
(a spool volume each, strictly valid objects), the replicas listed for the
relay, queue → queue LMTP admitted for the drain, leaving pods kept until
they drained; and the MailDomain status adding the replicas up."""
from __future__ import annotations

import kubernetes_validate

from correo_operator import render, status as statusmod
from correo_server import config as cfgmod
from correo_server import queuereplicas

from .test_scale_placement import K8S, mailbox, maildomain


def by_name(objs):
    return {(o["kind"], o["metadata"]["name"]): o for o in objs}


def test_rendered_objects_for_three_queue_replicas_are_strictly_valid():
    domain = maildomain(queue={"replicas": 3}, mailstore={"shards": 2}, tls={"secretName": "acme-tls"})
    objs = render.render(domain, [mailbox("ana")], {})
    for obj in objs:
        kubernetes_validate.validate(obj, K8S, strict=True)
    by = by_name(objs)
    sts = by[("StatefulSet", "acme-queue")]
    assert sts["spec"]["replicas"] == 3 and sts["spec"]["serviceName"] == "acme-queue"
    assert sts["spec"]["podManagementPolicy"] == "OrderedReady"  # as with one: scaling never recreates it
    assert [t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]] == ["spool"]
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"]["whenScaled"] == "Retain"
    cfg = cfgmod.parse(by[("ConfigMap", "acme-config")]["data"]["correo.yaml"])
    hosts = [f"acme-queue-{i}.acme-queue.mail.svc" for i in range(3)]
    assert [r.host for r in cfg.queue.replicas] == hosts
    assert [str(t) for t in queuereplicas.lmtp_targets(cfg)] == [f"{h}:2424" for h in hosts]
    # a queue pod works out its replica from its name
    assert queuereplicas.replica_from_environment("acme-queue-2") == 2
    own = queuereplicas.for_replica(cfg, 2)
    assert own.queue.replica == 2 and not queuereplicas.leaving(own)
    # queue → queue LMTP (the drain), both ways
    pol = by[("NetworkPolicy", "acme-queue")]["spec"]
    queue_sel = {"podSelector": {"matchLabels": sts["spec"]["selector"]["matchLabels"]}}
    assert any(queue_sel in rule.get("from", []) and {"protocol": "TCP", "port": 2424} in rule["ports"]
               for rule in pol["ingress"])
    assert any(rule.get("to") == [queue_sel] and rule["ports"] == [{"protocol": "TCP", "port": 2424}]
               for rule in pol["egress"])


def test_scaling_down_keeps_the_leaving_pods_until_they_drained():
    domain = maildomain(queue={"replicas": 1})
    by = by_name(render.render(domain, [], {}, queue_pods=3))
    assert by[("StatefulSet", "acme-queue")]["spec"]["replicas"] == 3
    cfg = cfgmod.parse(by[("ConfigMap", "acme-config")]["data"]["correo.yaml"])
    # the one that stays is listed (the relay sends to it), so that pods 1 and 2 know they are leaving
    assert [r.host for r in cfg.queue.replicas] == ["acme-queue-0.acme-queue.mail.svc"]
    assert [str(t) for t in queuereplicas.lmtp_targets(cfg)] == ["acme-queue-0.acme-queue.mail.svc:2424"]
    for i in (1, 2):
        leaving = queuereplicas.for_replica(cfg, i)
        assert queuereplicas.leaving(leaving) and [n for n, _ in queuereplicas.peers(leaving)] == [0]
    assert not queuereplicas.leaving(queuereplicas.for_replica(cfg, 0))
    # drained: one queue as before
    by = by_name(render.render(domain, [], {}))
    assert cfgmod.parse(by[("ConfigMap", "acme-config")]["data"]["correo.yaml"]).queue.replicas == ()
    assert by[("StatefulSet", "acme-queue")]["spec"]["replicas"] == 1
    by = by_name(render.render(maildomain(queue={"replicas": 2}), [], {}, queue_pods=3))
    cfg = cfgmod.parse(by[("ConfigMap", "acme-config")]["data"]["correo.yaml"])
    assert len(cfg.queue.replicas) == 2 and by[("StatefulSet", "acme-queue")]["spec"]["replicas"] == 3
    leaving = queuereplicas.for_replica(cfg, 2)
    assert queuereplicas.leaving(leaving) and [i for i, _ in queuereplicas.peers(leaving)] == [0, 1]


def _doc(ready=True, delivered=0, deferred=0, messages=0, drain=None, errors=()):
    figures = {"active": deferred, "deferred": deferred, "delayedNoticesSent": 0, "bounced": 0,
               "delivered": delivered, "oldestDeferredAgeSeconds": 60 * deferred, "lastErrors": list(errors),
               "delayed": [], "lastBounces": []}
    doc = {"service": "queue", "ready": ready, "time": "2026-12-05T01:00:00Z", "totals": figures,
           "domains": {"acme.test": dict(figures)}, "senders": {}, "messages": messages}
    if drain:
        doc["drain"] = drain
    return doc


def test_the_domain_status_adds_the_replicas_up_and_says_which_are_down_or_draining():
    domain = maildomain(queue={"replicas": 2})
    err = {"destination": "mx.example", "error": "451 later", "time": "2026-12-05T00:59:00Z"}
    docs = (_doc(delivered=5, deferred=2, messages=2, errors=[err]), _doc(delivered=7, deferred=1, messages=1),
            _doc(messages=3, drain={"leaving": True, "drained": False, "remaining": 3}))
    merged = statusmod.merge_queue_replicas(docs)
    observed = statusmod.Observed(queue=merged, queue_replicas=docs)
    st = statusmod.domain_status(domain, [], observed=observed, now=statusmod.now_utc())
    assert st["queue"]["delivered"] == 12 and st["queue"]["deferred"] == 3
    assert st["queue"]["lastErrors"] == [err]
    assert [(r["replica"], r["messages"], r["draining"]) for r in st["queueReplicas"]] == \
        [(0, 2, False), (1, 1, False), (2, 3, True)]
    cond = next(c for c in st["conditions"] if c["type"] == "QueueAvailable")
    assert cond["status"] == "True" and "Replica(s) 2 are draining" in cond["message"]

    down = (_doc(delivered=5), None)
    st = statusmod.domain_status(domain, [], observed=statusmod.Observed(
        queue=statusmod.merge_queue_replicas(down), queue_replicas=down), now=statusmod.now_utc())
    cond = next(c for c in st["conditions"] if c["type"] == "QueueAvailable")
    assert (cond["status"], cond["reason"]) == ("False", "ReplicasUnavailable") and "replica(s) 1 of 2" in cond["message"]
    assert st["queue"]["delivered"] == 5


def test_the_statefulset_shrinks_only_when_every_leaving_replica_drained():
    from correo_operator import queuescale
    drained = {"drain": {"leaving": True, "drained": True, "remaining": 0}}
    busy = {"drain": {"leaving": True, "drained": False, "remaining": 4}}
    not_yet = {"ready": True}  # not restarted as a leaving replica yet
    assert queuescale.pods_to_keep(2, 2, {})[0] is None
    assert queuescale.pods_to_keep(2, 4, {2: drained, 3: drained})[0] is None
    keep, why = queuescale.pods_to_keep(2, 4, {2: drained, 3: busy})
    assert keep == 4 and "replica(s) 3 still draining" in why
    assert queuescale.pods_to_keep(1, 2, {1: not_yet})[0] == 2
    assert queuescale.pods_to_keep(1, 2, {1: None})[0] == 2  # unreadable: kept
