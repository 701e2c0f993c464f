"""The mailstore's ``GET /status`` document (:class:`~correo_server.statusdoc.MailstoreStatus`).

Pure: :mod:`.service` gathers each mailbox's usage from the store and the
time of its last delivery, and calls :func:`build` with the mail refused per
mailbox (:mod:`.refusals`).  Every mailbox in the directory is listed,
including those that never received mail (zero messages, no last delivery,
nothing refused), so that the control plane can write usage on every Mailbox
resource.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from ..directory import Directory
from ..statusdoc import MailboxUsage, MailstoreStatus, Refusal, rfc3339
from .junk import JunkLog
from .refusals import RefusalLog


@dataclass(frozen=True)
class Usage:
    messages: int = 0
    bytes: int = 0
    last_delivery: float | None = None  # Unix time of the last delivery


def build(directory: Directory, usage: Mapping[str, Usage], *, ready: bool, now: float,
          refusals: RefusalLog | None = None, rules: Mapping[str, dict] | None = None,
          junk: JunkLog | None = None) -> MailstoreStatus:
    """``usage`` by canonical mailbox address; mailboxes missing from it are empty.
    ``rules``: each mailbox's mail rules (:func:`.rules.report.mailbox_rules`)."""
    mailboxes: dict[str, MailboxUsage] = {}
    refusals = refusals if refusals is not None else RefusalLog()
    for entry in directory:
        u = usage.get(entry.address.lower(), Usage())
        r = refusals.get(entry.address)
        mailboxes[entry.address.lower()] = MailboxUsage(
            messages=u.messages,
            bytes=u.bytes,
            quotaBytes=entry.quota_bytes,
            lastDelivery=rfc3339(u.last_delivery) if u.last_delivery is not None else None,
            refused=r.count,
            lastRefusal=Refusal(time=rfc3339(r.last_time), reason=r.last_reason or "")
            if r.last_time is not None else None,
            junk=junk.get(entry.address) if junk is not None else 0,
        )
        if rules and entry.address.lower() in rules:
            mailboxes[entry.address.lower()]["rules"] = rules[entry.address.lower()]
    return MailstoreStatus(service="mailstore", ready=ready, time=rfc3339(now), mailboxes=mailboxes)
