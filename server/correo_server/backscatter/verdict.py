"""The sender verdict that travels with a message from the relay into the queue.

The relay accepts some mail whose sender failed SPF or DMARC (DMARC
``p=none`` or ``quarantine``, ``pct``, ``rejectSpfFail: false``): the sender
may well be forged.  The queue must then never send that sender a notice
(failure or delay): the notice would be backscatter.  The verdict goes along
the synchronous hand-off as a private LMTP ``MAIL FROM`` parameter
(RFC 5321 section 4.1.2: ``X``-keywords are for private use), sent only to a
queue that announces it in its LHLO reply::

    MAIL FROM:<someone@forged.example> SIZE=1234 XVERDICT=spf

The queue keeps it in the message's envelope on disk (``unverified``), so
it survives restarts; when a recipient of such a message bounces, the queue
drops the notice, logs ``notice_suppressed`` and counts it
(``queue_notices_suppressed_total{reason}``).  Pure.
"""
from __future__ import annotations

from typing import Mapping

PARAM = "XVERDICT"
VALUES = ("spf", "dmarc")


def mail_params(unverified: str) -> tuple[str, ...]:
    """The MAIL parameter for a verdict ("" when the sender passed or was not checked)."""
    return (f"{PARAM}={unverified}",) if unverified in VALUES else ()


def from_params(params: Mapping[str, str | None]) -> str:
    """The verdict in a MAIL command's parameters ("" when none or unknown)."""
    value = (params.get(PARAM) or "").lower()
    return value if value in VALUES else ""


def owes_notices(sender: str, unverified: str) -> bool:
    """Does the sender get delay and failure notices?  Not the null sender
    (no loops), not a sender that failed SPF or DMARC (no backscatter)."""
    return bool(sender) and not unverified
