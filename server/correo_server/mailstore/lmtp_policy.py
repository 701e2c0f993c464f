"""What LMTP answers for each recipient: pure decisions, no I/O.

:mod:`.lmtp` (the LMTP handler) gathers the facts (the directory entry,
the mailbox's usage, the free space on the data volume, the message size)
and asks here; the reply it gets is what the queue sees for that recipient.
RFC 2033 gives one reply per accepted recipient after DATA; the enhanced
status codes are those of RFC 3463:

=====================  ============  ==========================================
situation              reply         why
=====================  ============  ==========================================
unknown address        550 5.1.1     bad destination mailbox address
suspended mailbox      550 5.2.1     mailbox disabled, not accepting messages
over quota (reject)    552 5.2.2     mailbox full / message would exceed quota
over quota (defer)     452 4.2.2     the same, try later (owner may clean up)
disk nearly full       452 4.3.1     mail system full
store failed           451 4.3.0     other mail system status
message too big        552 5.3.4     message too big for system
mailbox being moved    451 4.2.0     other mailbox status, try later
wrong shard            451 4.2.0     the same (the queue read an older directory)
stored (fsynced)       250 2.0.0
=====================  ============  ==========================================
"""
from __future__ import annotations

from ..directory import MailboxEntry
from ..wire.replies import Reply

__all__ = ["Reply", "delivery_reply", "disk_full", "mailbox_full", "over_quota", "over_quota_reply", "rcpt_reply",
           "store_failed", "stored", "suspended", "too_big", "trace_headers", "unknown"]


def unknown(address: str) -> Reply:
    return Reply(550, "5.1.1", f"<{address}>: no such mailbox here")


def suspended(address: str) -> Reply:
    return Reply(550, "5.2.1", f"<{address}>: mailbox is disabled")


def disk_full() -> Reply:
    return Reply(452, "4.3.1", "insufficient system storage, try again later")


def store_failed() -> Reply:
    return Reply(451, "4.3.0", "temporary failure storing the message, try again later")


def too_big(limit: int) -> Reply:
    return Reply(552, "5.3.4", f"message is larger than {limit} octets")


def mailbox_full(used_bytes: int, quota_bytes: int) -> bool:
    """True when nothing more fits: usage at (or over) the quota.  Otherwise a
    refused message was only too big for the room left."""
    return quota_bytes > 0 and used_bytes >= quota_bytes


def over_quota_reply(address: str, over_quota_policy: str, *, used_bytes: int, quota_bytes: int) -> Reply:
    """The quota refusal, saying which case it is: ``mailbox is full`` (no
    room at all) or ``message would exceed the mailbox quota`` (a mailbox at,
    say, 57% refusing a message bigger than the room left — smaller mail
    still gets in, so "the mailbox is over quota" would be untrue).  Same
    codes either way.  ``mailstore.overQuota``: "reject" bounces at once,
    "defer" lets the queue retry (until its give-up time) in case the owner
    makes room."""
    what = "mailbox is full" if mailbox_full(used_bytes, quota_bytes) else "message would exceed the mailbox quota"
    if over_quota_policy == "defer":
        return Reply(452, "4.2.2", f"<{address}>: {what}, try again later")
    return Reply(552, "5.2.2", f"<{address}>: {what}")


def stored(address: str, uid: int | None = None) -> Reply:
    suffix = f" (uid {uid})" if uid is not None else ""
    return Reply(250, "2.0.0", f"<{address}> delivered{suffix}")


def rcpt_reply(address: str, entry: MailboxEntry | None) -> Reply | None:
    """At ``RCPT TO``: refuse addresses nobody owns; None accepts (the rest is
    decided after DATA, once the size is known)."""
    if entry is None:
        return unknown(address)
    return None


def wrong_shard(entry: MailboxEntry | None, own_shard: int | None) -> Reply | None:
    """A mailbox another shard owns (the queue read an older directory, or the
    mailbox was just pinned elsewhere): deferred, never stored here."""
    if entry is None or own_shard is None or entry.shard_id == own_shard:
        return None
    return Reply(451, "4.2.0", f"<{entry.address}>: on mailstore shard {entry.shard_id}, not {own_shard}; "
                                "try again later")


def moving(address: str) -> Reply:
    """The mailbox is being moved to another shard: the queue retries (soon:
    our own mailstore's ``4.2.0`` is retried like a hop that is down)."""
    return Reply(451, "4.2.0", f"<{address}>: mailbox is being moved to another mailstore shard; try again later")


def over_quota(used_bytes: int, message_bytes: int, quota_bytes: int) -> bool:
    """True when storing the message would take the mailbox over its quota.
    A quota of 0 (or less) means no limit, as in Dovecot."""
    return quota_bytes > 0 and used_bytes + message_bytes > quota_bytes


def delivery_reply(address: str, entry: MailboxEntry | None, *, message_bytes: int,
                   used_bytes: int, over_quota_policy: str = "reject",
                   free_bytes: int | None = None, min_free_bytes: int = 0) -> Reply | None:
    """After DATA, for one recipient: the refusal to give, or None to store.

    ``entry`` is looked up again at this point, so a mailbox deleted or
    suspended since ``RCPT`` is refused now.  ``free_bytes`` is the free
    space on the data volume (None when unknown); a message that would leave
    less than ``min_free_bytes`` free is deferred with ``452 4.3.1``.
    """
    if entry is None:
        return unknown(address)
    if entry.suspended:
        return suspended(address)
    if free_bytes is not None and free_bytes - message_bytes < min_free_bytes:
        return disk_full()
    if over_quota(used_bytes, message_bytes, entry.quota_bytes):
        return over_quota_reply(address, over_quota_policy, used_bytes=used_bytes, quota_bytes=entry.quota_bytes)
    return None


def trace_headers(sender: str, recipient: str) -> bytes:
    """``Return-Path:`` (the envelope sender, ``<>`` for bounces) and
    ``Delivered-To:`` (the address the queue delivered to), prepended to the
    stored message the way Postfix's and Dovecot's local delivery do."""
    clean_sender = _one_line(sender)
    return (f"Return-Path: <{clean_sender}>\r\n"
            f"Delivered-To: {_one_line(recipient)}\r\n").encode("utf-8", "surrogateescape")


def _one_line(text: str) -> str:
    # Envelope addresses come from single command lines, but make sure no
    # CR/LF can ever split a header.
    text = text.strip().strip("<>")
    if "\r" in text or "\n" in text:
        text = text.replace("\r", "").replace("\n", "")
    return text
