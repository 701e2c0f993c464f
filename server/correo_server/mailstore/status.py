"""The mailstore's ``GET /status`` document (:class:`~correo_server.statusdoc.MailstoreStatus`).

Pure: :mod:`.service` gathers each mailbox's usage from the store and the
time of its last delivery, and calls :func:`build`.  Every mailbox in the
directory is listed, including those that never received mail (zero
messages, no last delivery), so that the control plane can write usage on
every Mailbox resource.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from ..directory import Directory
from ..statusdoc import MailboxUsage, MailstoreStatus, rfc3339


@dataclass(frozen=True)
class Usage:
    messages: int = 0
    bytes: int = 0
    last_delivery: float | None = None  # Unix time of the last delivery


def build(directory: Directory, usage: Mapping[str, Usage], *, ready: bool, now: float) -> MailstoreStatus:
    """``usage`` by canonical mailbox address; mailboxes missing from it are empty."""
    mailboxes: dict[str, MailboxUsage] = {}
    for entry in directory:
        u = usage.get(entry.address.lower(), Usage())
        mailboxes[entry.address.lower()] = MailboxUsage(
            messages=u.messages,
            bytes=u.bytes,
            quotaBytes=entry.quota_bytes,
            lastDelivery=rfc3339(u.last_delivery) if u.last_delivery is not None else None,
        )
    return MailstoreStatus(service="mailstore", ready=ready, time=rfc3339(now), mailboxes=mailboxes)
