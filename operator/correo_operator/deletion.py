"""What happens when a MailDomain or a Mailbox is deleted.

A MailDomain carries the finalizer ``correo.dev/finalizer`` (kopf adds and
removes it; ``kopfapp`` sets the name).  Before it goes, :func:`finalize_domain`
honours ``spec.reclaimPolicy``:

* ``Retain`` (the default): the queue's and the mailstore's volumes
  (PersistentVolumeClaims made from the StatefulSets' volumeClaimTemplates) are
  kept, and an Event on the MailDomain names them; a MailDomain created again
  with the same name finds its mail again.
* ``Delete``: those claims are deleted with the mail on them (and an Event says so).

Everything else the MailDomain owns (workloads, Services, ConfigMap, directory
and DKIM Secrets) goes with it through owner references (garbage collection).

A Mailbox needs no finalizer: the directory is rendered from the Mailboxes that
exist, so :func:`mailbox_removed` just reconciles its MailDomain; its mail stays
on the mailstore volume until the domain's reclaim policy removes it.
"""
from __future__ import annotations

import re

from correo_server import logs

from . import render as rendering
from .kube import PVC, Kube
from .model import MailDomain, Mailbox

log = logs.get(__name__)

FINALIZER = "correo.dev/finalizer"


def volume_claims(domain: MailDomain, claims: list[dict]) -> list[dict]:
    """The claims that belong to the domain's StatefulSets: ``<template>-<statefulset>-<ordinal>``."""
    names = rendering.names(domain)
    patterns = [re.compile(rf"^{re.escape(tmpl)}-{re.escape(names[sts])}-[0-9]+$")
                for tmpl, sts in (("spool", "queue"), ("mail", "mailstore"))]
    return sorted((c for c in claims if any(p.match(c["metadata"]["name"]) for p in patterns)),
                  key=lambda c: c["metadata"]["name"])


async def finalize_domain(kube: Kube, domain: MailDomain) -> list[str]:
    """Apply the reclaim policy; returns the names of the claims deleted (empty for Retain)."""
    ns, name = domain.namespace, domain.name
    policy = domain.spec.reclaim_policy
    listed = await kube.list(PVC.api_version, PVC.kind, ns, labels={rendering.LABEL_INSTANCE: name})
    claims = volume_claims(domain, listed)
    claim_names = [c["metadata"]["name"] for c in claims]
    if policy == "Delete":
        deleted = []
        for claim in claim_names:
            if await kube.delete(PVC.api_version, PVC.kind, ns, claim):
                deleted.append(claim)
        log.info("volumes deleted", namespace=ns, name=name, claims=deleted, reclaim_policy=policy)
        await kube.post_event(domain.reference(), type="Normal", reason="VolumesDeleted",
                              message=(f"reclaimPolicy Delete: deleted {len(deleted)} volume claim(s) with their "
                                       f"mail and queue: {', '.join(deleted) or 'none found'}."))
        return deleted
    log.info("volumes retained", namespace=ns, name=name, claims=claim_names, reclaim_policy=policy)
    if claim_names:
        message = (f"reclaimPolicy Retain: kept {len(claim_names)} volume claim(s) with the mail and queue: "
                   f"{', '.join(claim_names)}. A MailDomain named {name} in {ns} uses them again; "
                   "delete them by hand to free the space.")
    else:
        message = "reclaimPolicy Retain: no volume claims were found to keep."
    await kube.post_event(domain.reference(), type="Normal", reason="VolumesRetained", message=message)
    return []


async def mailbox_removed(reconciler, mailbox: Mailbox, domain_key: tuple[str, str] | None) -> None:
    """Take a deleted Mailbox out of its MailDomain's directory."""
    if domain_key is None:
        return
    outcome = await reconciler.run(*domain_key, trigger="mailbox-deleted")
    if outcome is not None:
        address = mailbox.spec.address
        log.info("mailbox removed from directory", namespace=domain_key[0], name=domain_key[1],
                 mailbox=mailbox.name, address=address)
        await reconciler.kube.post_event(
            outcome.inputs.domain.reference(), type="Normal", reason="MailboxRemoved",
            message=(f"{address} was removed from the directory; its mail stays on the mailstore volume "
                     f"until the MailDomain's reclaim policy removes it."))
