"""The content scanner's verdict for Sieve's ``spamtest`` and ``virustest`` (RFC 5235).  Pure.

The relay scans mail that arrives on port 25 with rspamd when a domain has
it (:mod:`correo_server.scanning.rspamd`) and writes its verdict on top of
the message: ``X-Spam-Status: Yes, score=7.20 required=6.00`` and
``X-Spam-Action``, after removing every ``X-Spam-*`` field the message
arrived with.  ``X-Spam-Action`` is ours only, so a message carrying it was
scanned: its score feeds ``spamtest`` (rspamd's default reject score, 15, is
"certainly spam" unless the required score is higher), and as the relay
refuses viruses, ``virustest`` says "clean".  Without it no scanner ran and
both tests say "not tested" (RFC 5235 3.1: ``0``), unless the relay put
``X-Spam-Flag: YES`` alone (the sender's DMARC policy said ``quarantine``):
then ``spamtest`` says "certainly spam" and ``virustest`` "not tested".
"""
from __future__ import annotations

import re

from ...sieve import ScanVerdict
from ...sieve.message import MessageView

REJECT_SCORE = 15.0  # rspamd's default "reject" threshold
_STATUS = re.compile(r"score=(-?[0-9]+(?:\.[0-9]+)?)\s*required=(-?[0-9]+(?:\.[0-9]+)?)", re.I)


def scan_verdict(message: MessageView) -> ScanVerdict | None:
    if message.first("x-spam-action") is None:
        if (message.first("x-spam-flag") or "").strip().upper() == "YES":
            return ScanVerdict(spam_score=REJECT_SCORE, spam_max=REJECT_SCORE, spam_text="quarantine")
        return None
    status = message.first("x-spam-status") or ""
    found = _STATUS.search(status)
    if found is None:
        return ScanVerdict(virus_level=1)
    score, required = float(found.group(1)), float(found.group(2))
    return ScanVerdict(spam_score=score, spam_max=max(REJECT_SCORE, required), virus_level=1,
                       spam_text=message.first("x-spam-action") or "")
