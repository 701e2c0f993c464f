"""Shrinking the queue StatefulSet only once the leaving replicas drained.

``spec.queue.replicas`` lowered from N to M: the configuration lists the M
replicas that stay (the relay stops sending to the others, and a pod past
the list drains into them: ``correo_server.queue.handover``), but the
StatefulSet keeps its N pods until each leaving one reports, on its
``/status``, ``drain: {leaving: true, drained: true}``; then the next pass
renders M (:func:`correo_operator.render.render`'s ``queue_pods``).  A
leaving pod that cannot be read, has not restarted as a leaving one yet,
or still holds messages keeps all N (a StatefulSet shrinks from the top, so
the pods go together once all are empty).

:func:`pods_to_keep` is the decision (pure); :func:`queue_pods` reads the
live StatefulSet and the leaving pods' status for it.
"""
from __future__ import annotations

from typing import Any, Awaitable, Callable, Mapping

from correo_server import logs

from . import render as rendering
from .model import MailDomain

log = logs.get(__name__)

Fetch = Callable[[str], Awaitable[dict | None]]


def live_queue_pods(domain: MailDomain, live: list[dict]) -> int:
    """Replicas of the live queue StatefulSet (0 when there is none yet)."""
    name = rendering.names(domain)["queue"]
    for obj in live:
        if obj.get("kind") == "StatefulSet" and obj["metadata"].get("name") == name:
            return int((obj.get("spec") or {}).get("replicas", 1))
    return 0


def drained(doc: Mapping[str, Any] | None) -> bool:
    drain = (doc or {}).get("drain") or {}
    return bool(drain.get("leaving") and drain.get("drained"))


def pods_to_keep(wanted: int, running: int, docs: Mapping[int, Mapping[str, Any] | None]) -> tuple[int | None, str]:
    """(queue pods to render, why): None to render ``wanted`` (nothing to
    drain, or every leaving replica drained); else ``running``."""
    if running <= wanted:
        return None, "no queue replica is leaving"
    waiting = [i for i in range(wanted, running) if not drained(docs.get(i))]
    if not waiting:
        return None, f"queue replicas {wanted}..{running - 1} drained: the StatefulSet shrinks to {wanted}"
    return running, f"queue replica(s) {', '.join(map(str, waiting))} still draining: {running} pods kept"


async def queue_pods(domain: MailDomain, live: list[dict], fetch: Fetch | None) -> int | None:
    """What :func:`pods_to_keep` decides for ``domain`` now (reads the leaving pods' ``/status``)."""
    wanted, running = domain.spec.queue.replicas, live_queue_pods(domain, live)
    if running <= wanted:
        return None
    docs: dict[int, Mapping[str, Any] | None] = {}
    for i in range(wanted, running):
        docs[i] = await fetch(rendering.queue_url(domain, i) + "/status") if fetch is not None else None
    keep, why = pods_to_keep(wanted, running, docs)
    log.info("queue_scale_down", namespace=domain.namespace, name=domain.name, wanted=wanted, running=running,
             decision=why, remaining={i: ((d or {}).get("drain") or {}).get("remaining") for i, d in docs.items()})
    return keep
