"""Idempotency keys: each message reaches each mailbox once, whatever crashes.

A message crosses two internal LMTP hops (relay → queue → mailstore), and
every hop can die after it did the work and before it said so: the mailstore
stored the message and was killed before its ``250`` went out, so the queue
delivers it again; the queue spooled it and died before answering the
relay, so the relay answers ``451`` and the client sends it again.  Without
more, each of those is a second copy in the mailbox.

Both hops therefore carry a key, as the ``XDELIVERY-KEY`` LMTP extension
(:data:`EXTENSION`, offered in the LHLO reply; a server that does not offer
it gets no parameter):

* relay → queue, ``MAIL FROM:<...> XDELIVERY-KEY=<message key>``: the
  relay's :func:`message_key`, derived from what the *client* sent (the
  envelope and the message as received, before the relay's ``Received:``
  and signature), so that the client's second attempt after a ``451`` has
  the same key as its first.  Only a message with a ``Message-ID`` gets one:
  two byte-identical messages with the same Message-ID and envelope are one
  message sent twice; without a Message-ID, two identical notices (a cron
  job's) may well be two messages.  The queue keeps the key with the
  envelope and answers a second attempt while the first copy is still in
  its spool with the first copy's id (:mod:`.queue.intake`).
* queue → mailstore, ``RCPT TO:<...> XDELIVERY-KEY=<delivery key>``: per
  recipient, :func:`delivery_key` of the message key (or, for a message
  that has none, the queue id) and the mailbox address.  The mailstore
  commits the key in the same index transaction as the message's row (and
  names it in the message file, for a crash between the file's rename and
  that commit: :mod:`.mailstore.store.repair`), and answers a delivery whose
  key it has as delivered, without storing it again (:mod:`.mailstore.lmtp`).
  Keys are remembered for :data:`RETENTION_SECONDS`, longer than the queue
  retries (5 days by default).

What stays possible: a copy *outside* correo (a remote MX) when the queue's
first copy had already been delivered and removed before the client's
second attempt (the queue remembers keys only of messages it still holds;
RFC 5321 section 6.1 prefers a duplicate to a loss), and a duplicate of a
message without a Message-ID when the relay died after the queue took it.
"""
from __future__ import annotations

import hashlib
import re

EXTENSION = "XDELIVERY-KEY"  # LHLO keyword; MAIL (message key) and RCPT (delivery key) parameter
RETENTION_SECONDS = 7 * 24 * 3600  # how long the mailstore remembers a delivery's key

_VALID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_MESSAGE_ID = re.compile(rb"(?:^|\r\n)message-id[ \t]*:", re.I)


def valid(key: str | None) -> bool:
    """Is this a usable key (as the wire carries it: 1 to 64 letters,
    digits, dots, dashes, underscores; what a file name can hold)?"""
    return bool(key) and _VALID.fullmatch(key) is not None  # type: ignore[arg-type]


# Base32 (RFC 4648, lower case) of a 15-octet digest, ten bits (two letters)
# at a time: what ``base64.b32encode(digest).decode().lower()`` gives (keys
# are persisted: index rows, file names), without 3.11's pure-Python
# encoder (~1.8 us a key here, this 0.7).
_B32 = "abcdefghijklmnopqrstuvwxyz234567"
_PAIRS = [a + b for a in _B32 for b in _B32]


def _b32(digest: bytes) -> str:
    n = int.from_bytes(digest, "big")
    p = _PAIRS
    return "".join([p[(n >> 110) & 1023], p[(n >> 100) & 1023], p[(n >> 90) & 1023], p[(n >> 80) & 1023],
                    p[(n >> 70) & 1023], p[(n >> 60) & 1023], p[(n >> 50) & 1023], p[(n >> 40) & 1023],
                    p[(n >> 30) & 1023], p[(n >> 20) & 1023], p[(n >> 10) & 1023], p[n & 1023]])


def _digest(*parts: bytes) -> str:
    h = hashlib.blake2b(digest_size=15, person=b"correo-key")
    for part in parts:
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return _b32(h.digest())


def message_key(sender: str, recipients: list[str], content: bytes) -> str | None:
    """The key of a message as a client sent it: its envelope (recipients
    in any order) and its bytes; None when it has no ``Message-ID``."""
    end = content.find(b"\r\n\r\n")
    header = content if end < 0 else content[:end]
    if _MESSAGE_ID.search(header) is None:
        return None
    rcpts = "\0".join(sorted({r.lower() for r in recipients}))
    return _digest(sender.encode("utf-8", "surrogateescape"), rcpts.encode("utf-8", "surrogateescape"), content)


def delivery_key(base: str, address: str) -> str:
    """The key of one delivery: a message (its message key, or the queue id)
    to one mailbox address."""
    return _digest(base.encode("utf-8", "surrogateescape"), address.lower().encode("utf-8", "surrogateescape"))
