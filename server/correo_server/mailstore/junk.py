"""Junk at final delivery: mail the relay's verdict marks as junk goes to the
recipient's Junk folder, counted per mailbox; the scanner's verdict for Sieve.

The relay (``defences``) puts ``X-Spam-Flag: YES`` on top of a message that
rspamd said to ``add header`` / ``rewrite subject`` or whose sender's DMARC
policy said ``quarantine``, after removing every ``X-Spam-*`` field the
message arrived with on port 25; with rspamd it adds ``X-Spam-Status:
Yes|No, score=S required=R`` and ``X-Spam-Action``.  The first of each field
is ours (:func:`verdict_of`).  ``lmtp`` stores a message for which
:func:`is_junk` holds in the ``Junk`` folder instead of ``INBOX`` (creating
it again if its owner deleted it), and counts it (:class:`JunkLog`, on the
mailbox's ``/status`` entry and ``mailstore_junk_deliveries_total``).
Mail rules (Sieve) see the same verdict (:mod:`.rules.verdict`: ``spamtest``,
``virustest``), and their keep of junk goes to Junk (:mod:`.rules.delivery`).

Only the header section is read (a few hundred octets), never the body.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..mailauth import headers as hdrs

JUNK = "Junk"
INBOX = "INBOX"
_SCORE = re.compile(r"score=(-?[0-9]+(?:\.[0-9]+)?)", re.I)
_REQUIRED = re.compile(r"required=(-?[0-9]+(?:\.[0-9]+)?)", re.I)


@dataclass(frozen=True)
class Verdict:
    junk: bool = False
    spam_score: float | None = None  # rspamd's score, when it scanned the message
    spam_required: float | None = None
    action: str = ""


_NONE = Verdict()


def _header_section(message: bytes) -> bytes:
    end = message.find(b"\r\n\r\n")
    return message if end < 0 else message[:end + 2]


def verdict_of(message: bytes) -> Verdict:
    """The relay's verdict: the first ``X-Spam-Flag``, ``X-Spam-Status`` and ``X-Spam-Action``."""
    section = _header_section(message)
    if b"x-spam-" not in section.lower():  # none of them (most mail): no need to read the fields
        return _NONE
    fields, _ = hdrs.split(section)
    first: dict[str, str] = {}
    for f in fields:
        if f.lname in ("x-spam-flag", "x-spam-status", "x-spam-action") and f.lname not in first:
            first[f.lname] = f.value
    status = first.get("x-spam-status", "")
    score, required = _SCORE.search(status), _REQUIRED.search(status)
    return Verdict(junk=first.get("x-spam-flag", "").strip().upper() == "YES",
                   spam_score=float(score.group(1)) if score else None,
                   spam_required=float(required.group(1)) if required else None,
                   action=first.get("x-spam-action", ""))


def is_junk(message: bytes) -> bool:
    return verdict_of(message).junk


def folder_for(message: bytes) -> str:
    """Where the message goes when no rule says otherwise."""
    return JUNK if is_junk(message) else INBOX


class JunkLog:
    """Messages delivered into Junk, per mailbox (since the mailstore started)."""

    def __init__(self) -> None:
        self._count: dict[str, int] = {}

    def record(self, mailbox: str) -> None:
        key = mailbox.lower()
        self._count[key] = self._count.get(key, 0) + 1

    def get(self, mailbox: str) -> int:
        return self._count.get(mailbox.lower(), 0)
