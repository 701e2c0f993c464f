"""Status from the data plane: read the services' ``/status``, write CR status.

After every reconcile pass (and so on every resync of the status timer),
:class:`StatusWriter` reads the queue's and the mailstore's ``GET /status``
through their Services (``render.service_urls``), the children's readiness
(ready/wanted replicas of the relay Deployment and the two StatefulSets), which
referenced Secrets exist, and the DKIM public key; it builds MailDomain and
Mailbox status with the shared pure functions of ``status`` (the same ones
``correo status`` uses locally), and patches the ``status`` subresource only
when the document differs from what the object already has.  Transitions
(delayed, bounced, quota exceeded, ready) become Kubernetes Events.

An unreachable status endpoint is an observation (``None``), not an error.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
from datetime import datetime
from typing import Any, Awaitable, Callable

import aiohttp

from correo_server import config as cfgmod
from correo_server import logs

from . import render as rendering
from . import placement, queuescale, secretdata
from . import status as statusmod
from .kube import MAILBOX, MAILDOMAIN, Kube, json_merge_diff
from .model import MailDomain, Mailbox, domain_of, read_each
from .reconcile import Outcome

log = logs.get(__name__)

Fetch = Callable[[str], Awaitable[dict | None]]
Clock = Callable[[], datetime]


class HttpStatusReader:
    """``GET <url>`` → the JSON document, or None when it cannot be read."""

    def __init__(self, timeout: float = 3.0) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __call__(self, url: str) -> dict | None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.get(url, headers={"Accept": "application/json"}) as rsp:
                if rsp.status != 200:
                    return None
                doc = json.loads(await rsp.text())
                return doc if isinstance(doc, dict) else None
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, OSError):
            return None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def strip_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: strip_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [strip_none(v) for v in value]
    return value


def availability(children: list[dict]) -> dict[str, tuple[int, int]]:
    """(ready, wanted) replicas of relay, queue and mailstore from the live workloads."""
    out: dict[str, tuple[int, int]] = {}
    for obj in children:
        if obj.get("kind") not in ("Deployment", "StatefulSet"):
            continue
        component = (obj["metadata"].get("labels") or {}).get(rendering.LABEL_COMPONENT)
        if component in ("relay", "queue", "mailstore"):
            wanted = int((obj.get("spec") or {}).get("replicas", 1))
            ready = int((obj.get("status") or {}).get("readyReplicas") or 0)
            out[component] = (ready, wanted)
    return out


def _service_host(svc: dict) -> str:
    ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    if (svc.get("spec") or {}).get("type") == "LoadBalancer" and ingress:
        return ingress[0].get("hostname") or ingress[0].get("ip") or ""
    meta = svc["metadata"]
    return f"{meta['name']}.{meta['namespace']}.svc"


def autoconfig_address(domain: MailDomain, children: list[dict]) -> str | None:
    """The load balancer address of the autoconfig Ingress, once the controller has published it."""
    name = rendering.names(domain)["autoconfig"]
    for obj in children:
        if obj.get("kind") == "Ingress" and obj["metadata"].get("name") == name:
            found = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
            if found:
                return found[0].get("hostname") or found[0].get("ip") or None
    return None


def endpoints(domain: MailDomain, children: list[dict]) -> dict[str, str]:
    """Where clients reach the domain's services, from the live Services."""
    names = rendering.names(domain)
    out: dict[str, str] = {}
    for svc in children:
        if svc.get("kind") != "Service":
            continue
        name = svc["metadata"]["name"]
        if name not in (names["relay"], names["mailstore"]):
            continue
        host = _service_host(svc)
        if not host:
            continue
        for port in (svc.get("spec") or {}).get("ports") or []:
            if port.get("name") in ("smtp", "submission", "smtps", "imap", "imaps", "pop3", "pop3s", "managesieve"):
                out[port["name"]] = f"{host}:{port['port']}"
    for component, url in rendering.service_urls(domain).items():
        out[f"{component}Status"] = f"{url}/status"
    if domain.spec.autoconfig.ingress is not None:
        out["autoconfig"] = f"https://{rendering.autoconfig_hosts(domain)[0]}/"
    else:
        out["autoconfig"] = f"http://{rendering.names(domain)['autoconfig']}.{domain.namespace}.svc"
    return out


def directory_shards(domain: MailDomain, children: list[dict]) -> dict[str, int]:
    """Mailbox → shard, as the live directory Secret records it."""
    name = rendering.names(domain)["directory"]
    for obj in children:
        if obj.get("kind") == "Secret" and obj["metadata"].get("name") == name:
            return placement.shards_in_directory(secretdata.secret_value(obj, cfgmod.DIRECTORY_FILE))
    return {}


def secret_keys(secrets: dict[str, dict]) -> dict[str, frozenset[str]]:
    return {name: secretdata.usable_keys(s) for name, s in secrets.items()}


def _differs(obj: MailDomain | Mailbox, new: dict) -> bool:
    return json_merge_diff(strip_none(obj.status), strip_none(new)) is not None


async def write_status(kube: Kube, obj: MailDomain | Mailbox, new: dict) -> bool:
    """Patch ``obj``'s status to ``new`` when different; post Events for transitions."""
    old = obj.status
    patch = json_merge_diff(strip_none(old), strip_none(new))
    if patch is None:
        return False
    meta = obj.metadata
    resource = MAILDOMAIN if obj.KIND == "MailDomain" else MAILBOX
    updated = await kube.patch_status(resource.api_version, obj.KIND, meta.namespace, meta.name, patch)
    if updated is None:
        return False
    for etype, reason, message in statusmod.transitions(old, new):
        try:
            await kube.post_event(updated, type=etype, reason=reason, message=message)
        except Exception as exc:  # noqa: BLE001 - an Event is worth less than the status
            log.warning("event not posted", namespace=meta.namespace, name=meta.name, reason=reason,
                        error=str(exc))
    return True


class StatusWriter:
    """The ``after`` hook of the Reconciler: status for a MailDomain and its Mailboxes."""

    def __init__(self, fetch: Fetch | None = None, *, clock: Clock = statusmod.now_utc, metrics: Any = None,
                 concurrency: int = 8, moves: Any = None) -> None:
        self.fetch = fetch or HttpStatusReader()
        self.moves = moves  # .opmoves.OperatorMoves: a round of mailbox moves before the status (None: none)
        self.concurrency = concurrency
        self.clock = clock
        self.metrics = metrics

    async def observe(self, outcome: Outcome) -> statusmod.Observed:
        domain = outcome.inputs.domain
        urls = rendering.service_urls(domain)
        shards = domain.spec.mailstore.shards
        queues = max(domain.spec.queue.replicas, queuescale.live_queue_pods(domain, outcome.children))
        if queues > 1:  # every replica, the leaving ones too (they report their drain)
            urls.update({f"queue-{i}": rendering.queue_url(domain, i) for i in range(queues)})
        wanted = ["relay", "queue", "mailstore"] if shards == 1 else \
            ["relay", "queue", *(f"mailstore-{i}" for i in range(shards))]
        if queues > 1:
            wanted = [c for c in wanted if c != "queue"] + [f"queue-{i}" for i in range(queues)]
        components = [c for c in wanted if c in urls]
        docs = await asyncio.gather(*(self.fetch(urls[c] + "/status") for c in components))
        found = dict(zip(components, docs))
        if self.metrics:
            for c, doc in found.items():
                self.metrics.status_read(c.partition("-")[0], ok=doc is not None)
        shard_docs = tuple(found.get(f"mailstore-{i}") for i in range(shards)) if shards > 1 else ()
        queue_docs = tuple(found.get(f"queue-{i}") for i in range(queues)) if queues > 1 else ()
        return statusmod.Observed(
            relay=found.get("relay"),
            queue=statusmod.merge_queue_replicas(queue_docs) if queue_docs else found.get("queue"),
            queue_replicas=queue_docs,
            mailstore=statusmod.merge_shards(shard_docs) if shard_docs else found.get("mailstore"),
            mailstore_shards=shard_docs,
            shards=directory_shards(domain, outcome.children) if shards > 1 else {},
            placements=outcome.placements,
            availability=availability(outcome.children),
            secret_keys=secret_keys(outcome.inputs.secrets),
            dkim_public_key=outcome.inputs.dkim_public_key,
            endpoints=endpoints(domain, outcome.children),
            autoconfig_address=autoconfig_address(domain, outcome.children),
        )

    async def __call__(self, kube: Kube, outcome: Outcome) -> int:
        steps: dict = {}
        owners = None
        if self.moves is not None and outcome.inputs.domain.spec.mailstore.shards > 1:
            try:
                steps, owners = await self.moves(kube, outcome)
            except Exception as exc:  # noqa: BLE001 - moves go on next pass; the status is written anyway
                log.warning("mailbox moves failed", namespace=outcome.inputs.domain.namespace,
                            name=outcome.inputs.domain.name, error=f"{type(exc).__name__}: {exc}")
        observed = await self.observe(outcome)
        if steps or owners:
            observed = dataclasses.replace(
                observed, shards=owners if owners is not None else observed.shards,
                placements={a: p for a, p in observed.placements.items() if owners is None or p.shard == owners.get(a)},
                moves={a: {"reason": s.reason, "message": s.message, "moving": s.moving}
                       for a, s in steps.items() if s.reason != "NotMoving"})
        now = self.clock()
        domain = outcome.inputs.domain
        writes = 0
        new = statusmod.domain_status(domain, outcome.inputs.mailboxes, observed=observed, now=now)
        writes += await write_status(kube, domain, new)
        pending = [(mb, statusmod.mailbox_status(mb, domain, observed=observed, now=now))
                   for mb in outcome.inputs.mailboxes]
        pending = [(mb, new) for mb, new in pending if _differs(mb, new)]
        if pending:  # a few at a time: 1,000 new Mailboxes need not wait for 1,000 round trips
            gate = asyncio.Semaphore(self.concurrency)

            async def one(mb: Mailbox, new: dict) -> bool:
                async with gate:
                    return await write_status(kube, mb, new)
            writes += sum(await asyncio.gather(*(one(mb, new) for mb, new in pending)))
        released = [mb for mb in outcome.inputs.others if mb.status.get("domain") == domain.name]
        if released:
            writes += await self.release(kube, domain.namespace, released)
        if self.metrics and writes:
            self.metrics.status_patched(writes)
        return writes

    async def release(self, kube: Kube, namespace: str, mailboxes: list[Mailbox]) -> int:
        """Mailboxes a MailDomain no longer serves (it went, or stopped hosting their
        domain): ``DomainNotFound``, unless another MailDomain claims them (its next
        pass writes their status then)."""
        domains = read_each(MailDomain, await kube.list(MAILDOMAIN.api_version, "MailDomain", namespace))
        writes = 0
        for mb in mailboxes:
            if domain_of(mb, domains) is None:
                writes += await self.orphan(kube, mb)
        return writes

    async def orphan(self, kube: Kube, mailbox: Mailbox, secrets: dict[str, dict] | None = None) -> bool:
        """Status of a Mailbox that no MailDomain serves (reason DomainNotFound)."""
        observed = statusmod.Observed(secret_keys=secret_keys(secrets or {}))
        new = statusmod.mailbox_status(mailbox, None, observed=observed, now=self.clock())
        return await write_status(kube, mailbox, new)
