"""Addresses that would only bounce later: refused at RCPT.  Pure.

The directory expands an address the way the queue will (aliases, forwards,
``keepCopy``).  If a forward leads to a mailbox of ours that is suspended,
or to an address in one of our domains that no mailbox has, the queue would
accept the mail and the mailstore refuse it: a bounce to a sender who may
not exist.  So the relay refuses the recipient at RCPT, naming the address
the client used (never where it forwards to: that is the owner's business).
The address itself being unknown or suspended is the relay's usual check
(``relay.policy.check_recipient``); this covers what lies behind it.
"""
from __future__ import annotations

from typing import Callable

from ..directory import Directory, MailboxEntry
from ..wire.replies import Reply

REASON = "forward_broken"


def reached(directory: Directory, address: str) -> list[MailboxEntry]:
    """The mailboxes of ours that keep a copy of mail for ``address``."""
    found = directory.expand(address)
    if found is None:
        return []
    out = []
    for mailbox in found.local:
        entry = directory.lookup(mailbox)
        if entry is not None:
            out.append(entry)
    return out


def forward_refusal(directory: Directory, address: str, is_hosted: Callable[[str], bool]) -> tuple[Reply, str] | None:
    """(the refusal, the broken target for the log) when mail for ``address``
    would reach a suspended mailbox or an unknown address of ours through a
    forward; None otherwise."""
    first = directory.lookup(address)
    found = directory.expand(address)
    if first is None or found is None:
        return None
    for mailbox in found.local:
        entry = directory.lookup(mailbox)
        if entry is not None and entry.suspended and entry.address != first.address:
            return (Reply(550, "5.2.1", f"<{address}>: Recipient address rejected: it forwards to a mailbox "
                          "that is disabled", REASON), entry.address)
    for target in found.remote:
        if is_hosted(target.rpartition("@")[2]):
            return (Reply(550, "5.1.1", f"<{address}>: Recipient address rejected: it forwards to an address "
                          "that does not exist", REASON), target)
    return None
